package router

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/quick"
	"time"
)

func testKeys(starts ...int64) *AffinityKeys {
	var ks []AffinityKey
	for _, s := range starts {
		k := AffinityKey{Start: s}
		for i := range k.Key {
			k.Key[i] = byte(s) + byte(i)
		}
		ks = append(ks, k)
	}
	a := &AffinityKeys{}
	a.Set(ks)
	return a
}

// TestAffinityCodecProperty: any ID round-trips under any key held, within
// max age; one flipped bit, another cookie name, a key not held or an age
// past max age is refused.
func TestAffinityCodecProperty(t *testing.T) {
	keys := testKeys(1000, 5000)
	maxAge := time.Hour
	f := func(id string, age uint16, flip uint16) bool {
		if id == "" {
			id = "b"
		}
		if len(id) > 255 {
			id = id[:255]
		}
		issued := time.Unix(1_700_000_000, 0)
		k, _ := keys.signer(6000)
		v := EncodeAffinity(k, "srv", id, issued)
		now := issued.Add(time.Duration(age) * time.Second)
		got, at, err := DecodeAffinity(keys, "srv", v, maxAge, now)
		if time.Duration(age)*time.Second >= maxAge {
			if !errors.Is(err, ErrAffinityExpired) {
				return false
			}
		} else if err != nil || got != id || !at.Equal(issued) {
			return false
		}
		if _, _, err := DecodeAffinity(keys, "other", v, maxAge, issued); !errors.Is(err, ErrAffinitySignature) {
			return false
		}
		raw := []byte(v)
		i := int(flip) % len(raw)
		raw[i] ^= 1 << (flip % 6)
		if _, _, err := DecodeAffinity(keys, "srv", string(raw), maxAge, issued); err == nil && string(raw) != v {
			return false
		}
		if _, _, err := DecodeAffinity(testKeys(1000), "srv", v, maxAge, issued); !errors.Is(err, ErrAffinityKey) {
			return false
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 2000}); err != nil {
		t.Fatal(err)
	}
}

// TestAffinityRotation: after a rotation the old key still verifies, and
// the newest started key signs.
func TestAffinityRotation(t *testing.T) {
	keys := testKeys(1000)
	old, _ := keys.signer(1500)
	v := EncodeAffinity(old, "srv", "web-1", time.Unix(1500, 0))
	keys.Set([]AffinityKey{old, {Start: 2000, Key: [32]byte{9}}, {Start: 9000}})
	if k, _ := keys.signer(2500); k.Start != 2000 {
		t.Fatalf("signer at 2500 starts %d, want 2000 (9000 has not started)", k.Start)
	}
	if id, _, err := DecodeAffinity(keys, "srv", v, time.Hour, time.Unix(2500, 0)); err != nil || id != "web-1" {
		t.Fatalf("old key after rotation: %q %v", id, err)
	}
	if _, _, err := DecodeAffinity(keys, "srv", v, time.Hour, time.Unix(1500-120, 0)); !errors.Is(err, ErrAffinityExpired) {
		t.Fatalf("issued in the future: %v", err)
	}
}

func FuzzDecodeAffinity(f *testing.F) {
	keys := testKeys(1000)
	k, _ := keys.signer(1000)
	f.Add(EncodeAffinity(k, "srv", "web-1", time.Unix(2000, 0)))
	f.Add("")
	f.Add(strings.Repeat("A", 600))
	f.Fuzz(func(t *testing.T, v string) {
		// Whatever verifies is exactly what the key holder would sign.
		id, issued, err := DecodeAffinity(keys, "srv", v, time.Hour, time.Unix(2100, 0))
		if err == nil && v != EncodeAffinity(k, "srv", id, issued) {
			t.Fatalf("%q verified but was never signed", v)
		}
	})
}

// TestAffinityHTTP: a response carries a cookie naming the backend that
// served; with it the client stays there although the picker now puts
// another first; a cookie naming a backend gone, or forged, is counted and
// the picker decides, with a new cookie.
func TestAffinityHTTP(t *testing.T) {
	a := newBackend(t, "a", httpEcho("a"))
	b := newBackend(t, "b", httpEcho("b"))
	p := &fixedPicker{backends: []Backend{a, b}}
	keys := testKeys(1)
	gone := map[string]bool{}
	var mu sync.Mutex
	rt, srv := newFront(t, Config{Picker: p, Affinity: &Affinity{
		Cookie: "aff", MaxAge: time.Hour, Keys: keys,
		Lookup: func(_, id string) (Backend, bool) {
			mu.Lock()
			defer mu.Unlock()
			for _, x := range []Backend{a, b} {
				if x.ID == id && !gone[id] {
					return x, true
				}
			}
			return Backend{}, false
		},
	}})
	get := func(cookie string) (backend, setCookie string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/?session_id=k", nil)
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		for _, c := range res.Cookies() {
			if c.Name == "aff" {
				setCookie = c.Name + "=" + c.Value
				if c.Path != "/" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.MaxAge != 3600 || c.Secure {
					t.Errorf("cookie attributes %+v", c)
				}
			}
		}
		return res.Header.Get("X-Backend"), setCookie
	}
	got, c := get("")
	if got != "a" || c == "" {
		t.Fatalf("first request: backend %q cookie %q", got, c)
	}
	p.backends = []Backend{b, a} // the ring changed: b owns the key now
	if got, again := get(c); got != "a" || again != "" {
		t.Fatalf("with cookie: backend %q, set-cookie %q; want a and no new cookie", got, again)
	}
	mu.Lock()
	gone["a"] = true
	mu.Unlock()
	got, c2 := get(c)
	if got != "b" || c2 == "" || rt.AffinityGone() != 1 {
		t.Fatalf("a gone: backend %q cookie %q gone %d; want b, a new cookie, 1", got, c2, rt.AffinityGone())
	}
	if got, _ := get("aff=forged"); got != "b" || rt.AffinityRejected() != 1 {
		t.Fatalf("forged: backend %q rejected %d", got, rt.AffinityRejected())
	}
}
