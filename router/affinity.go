package router

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"sync/atomic"
	"time"
)

// Affinity pins a client to the backend that served it, across ring
// changes and across nodes, with a signed cookie (HAProxy's "cookie SRV
// insert", Envoy's stateful session), honoured by every node alike because
// the signing keys are the mesh's.
type Affinity struct {
	// Cookie is the cookie's name.
	Cookie string
	// MaxAge is the cookie's Max-Age and how long a signature is honoured.
	MaxAge time.Duration
	// Keys holds the mesh's signing keys; node keeps it current.
	Keys *AffinityKeys
	// Lookup returns the backend named by a valid cookie while it may take
	// sessions of pool (in the catalog, of that pool, active, healthy);
	// false sends the request to the pool's ring, so a cookie never takes
	// a request to another pool's backend.
	Lookup func(pool, id string) (Backend, bool)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// AffinityKey is one signing key, named by when it starts to sign.
type AffinityKey struct {
	Start int64 // unix seconds
	Key   [32]byte
}

// AffinityKeys is the set of keys in use: the newest that has started
// signs, every one held verifies. Safe for concurrent use.
type AffinityKeys struct{ p atomic.Pointer[[]AffinityKey] }

// Set replaces the keys held.
func (k *AffinityKeys) Set(keys []AffinityKey) {
	c := append([]AffinityKey(nil), keys...)
	k.p.Store(&c)
}

func (k *AffinityKeys) signer(now int64) (AffinityKey, bool) {
	var best AffinityKey
	ok := false
	if p := k.p.Load(); p != nil {
		for _, key := range *p {
			if key.Start <= now && (!ok || key.Start > best.Start) {
				best, ok = key, true
			}
		}
	}
	return best, ok
}

func (k *AffinityKeys) verifier(start int64) (AffinityKey, bool) {
	if p := k.p.Load(); p != nil {
		for _, key := range *p {
			if key.Start == start {
				return key, true
			}
		}
	}
	return AffinityKey{}, false
}

// Cookie value: base64url (no padding) of version(1) | key start(8) |
// issued(8, unix seconds) | backend ID | HMAC-SHA256 truncated to 16
// bytes over a domain, the cookie's name and all before it. The name is in
// the MAC so that a value is not valid under another cookie.
const (
	affinityVersion = 1
	affinityMACLen  = 16
	affinityHead    = 1 + 8 + 8
	// MaxAffinityCookieLen bounds the value decoded: a backend ID is at
	// most 255 bytes (ring.ValidateID).
	MaxAffinityCookieLen = (affinityHead + 255 + affinityMACLen + 2) * 4 / 3
	affinityDomain       = "meshlb/affinity/v1\x00"
	// affinitySkew is how far in the future an issue time may lie: the
	// nodes' clocks differ.
	affinitySkew = time.Minute
)

// Why a cookie is not honoured; the router counts each.
var (
	ErrAffinityMalformed = errors.New("malformed affinity cookie")
	ErrAffinityKey       = errors.New("affinity cookie signed by a key not held")
	ErrAffinitySignature = errors.New("affinity cookie signature mismatch")
	ErrAffinityExpired   = errors.New("affinity cookie expired")
)

func affinityMAC(key [32]byte, name string, payload []byte) []byte {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte(affinityDomain))
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write(payload)
	return m.Sum(nil)[:affinityMACLen]
}

// EncodeAffinity returns the cookie value pinning backend id, issued at
// now, signed with key.
func EncodeAffinity(key AffinityKey, name, id string, now time.Time) string {
	b := make([]byte, affinityHead, affinityHead+len(id)+affinityMACLen)
	b[0] = affinityVersion
	binary.BigEndian.PutUint64(b[1:], uint64(key.Start))
	binary.BigEndian.PutUint64(b[9:], uint64(now.Unix()))
	b = append(b, id...)
	b = append(b, affinityMAC(key.Key, name, b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeAffinity verifies a cookie value and returns its backend ID and
// issue time. It never panics; its errors hold no key or value bytes.
func DecodeAffinity(keys *AffinityKeys, name, value string, maxAge time.Duration, now time.Time) (id string, issued time.Time, err error) {
	if len(value) > MaxAffinityCookieLen {
		return "", time.Time{}, ErrAffinityMalformed
	}
	// Strict: one cookie has one encoding, so a value verifies only as
	// exactly what a node signed.
	b, err := base64.RawURLEncoding.Strict().DecodeString(value)
	if err != nil || len(b) < affinityHead+1+affinityMACLen || b[0] != affinityVersion {
		return "", time.Time{}, ErrAffinityMalformed
	}
	payload, mac := b[:len(b)-affinityMACLen], b[len(b)-affinityMACLen:]
	key, ok := keys.verifier(int64(binary.BigEndian.Uint64(b[1:])))
	if !ok {
		return "", time.Time{}, ErrAffinityKey
	}
	if !hmac.Equal(mac, affinityMAC(key.Key, name, payload)) {
		return "", time.Time{}, ErrAffinitySignature
	}
	sec := int64(binary.BigEndian.Uint64(b[9:]))
	if sec < 0 || sec > now.Add(affinitySkew).Unix() || now.Unix()-sec >= int64(maxAge/time.Second) {
		return "", time.Time{}, ErrAffinityExpired
	}
	return string(payload[affinityHead:]), time.Unix(sec, 0), nil
}

// affinityPin is what a request's cookie said: the backend it pins, if it
// was valid and that backend may take it, and when it was issued.
type affinityPin struct {
	backend Backend
	issued  time.Time
	ok      bool
}

// affinityOf reads req's affinity cookie. An invalid one is counted and
// ignored; the ring decides then.
func (rt *Router) affinityOf(req *http.Request, pool string) affinityPin {
	a := rt.cfg.Affinity
	if a == nil {
		return affinityPin{}
	}
	c, err := req.Cookie(a.Cookie)
	if err != nil {
		return affinityPin{}
	}
	id, issued, err := DecodeAffinity(a.Keys, a.Cookie, c.Value, a.MaxAge, rt.affinityNow())
	if err != nil {
		rt.affinityRejected.Add(1)
		return affinityPin{}
	}
	b, ok := a.Lookup(pool, id)
	if !ok {
		rt.affinityGone.Add(1)
		return affinityPin{}
	}
	return affinityPin{backend: b, issued: issued, ok: true}
}

func (rt *Router) affinityNow() time.Time {
	if f := rt.cfg.Affinity.Now; f != nil {
		return f()
	}
	return time.Now()
}

// pinned puts a pinned backend first, the ring's candidates after it.
func pinned(pin affinityPin, cands []Backend, n int) []Backend {
	if !pin.ok {
		return cands
	}
	out := make([]Backend, 0, n)
	out = append(out, pin.backend)
	for _, c := range cands {
		if c.ID != pin.backend.ID && len(out) < n {
			out = append(out, c)
		}
	}
	return out
}

// affinityCookie is the Set-Cookie for a response served by backend id, or
// nil when the cookie the client holds already says so and is less than
// half its age (no header on every response).
func (rt *Router) affinityCookie(req *http.Request, pin affinityPin, id string) *http.Cookie {
	a := rt.cfg.Affinity
	if a == nil {
		return nil
	}
	now := rt.affinityNow()
	if pin.ok && pin.backend.ID == id && now.Sub(pin.issued) < a.MaxAge/2 {
		return nil
	}
	key, ok := a.Keys.signer(now.Unix())
	if !ok {
		return nil // no mesh key yet: nothing any node could verify
	}
	return &http.Cookie{
		Name:     a.Cookie,
		Value:    EncodeAffinity(key, a.Cookie, id, now),
		Path:     "/",
		MaxAge:   int(a.MaxAge / time.Second),
		HttpOnly: true,
		Secure:   rt.isHTTPS(req),
		SameSite: http.SameSiteLaxMode,
	}
}

// AffinityRejected counts affinity cookies ignored as forged, expired or
// foreign; AffinityGone those valid but naming a backend that may no
// longer take sessions.
func (rt *Router) AffinityRejected() int64 { return rt.affinityRejected.Load() }

// AffinityGone: see AffinityRejected.
func (rt *Router) AffinityGone() int64 { return rt.affinityGone.Load() }
