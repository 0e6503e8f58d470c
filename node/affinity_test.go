package node

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshlb/meshlb/router"
	"github.com/meshlb/meshlb/tlsconf"
)

// TestAffinityRotationKeepsLiveCookies runs the minter's plan (as
// tickAffinity does) minute by minute over many periods, for several max
// ages: every cookie signed in the last max age still verifies after every
// rotation, and one older than its max age never does.
func TestAffinityRotationKeepsLiveCookies(t *testing.T) {
	for _, maxAge := range []time.Duration{time.Minute, 30 * time.Minute, time.Hour, 5 * time.Hour} {
		cfg := AffinityConfig{Cookie: "srv", MaxAge: maxAge}
		period := cfg.affinityPeriod()
		held := map[int64]router.AffinityKey{}
		keys := &router.AffinityKeys{}
		type issued struct {
			at    time.Time
			value string
		}
		var cookies []issued
		t0 := time.Unix(1_800_000_000, 0)
		step := max(time.Minute, period/60)
		for now := t0; now.Before(t0.Add(8 * period)); now = now.Add(step) {
			var starts []time.Time
			for s := range held {
				starts = append(starts, time.Unix(s, 0))
			}
			mint, drop := tlsconf.TicketPlan(starts, now, period)
			for _, at := range mint {
				held[at.Unix()] = router.AffinityKey{Start: at.Unix(), Key: [32]byte{byte(at.Unix()), byte(at.Unix() >> 8)}}
			}
			for _, at := range drop {
				delete(held, at.Unix())
			}
			var ks []router.AffinityKey
			for _, k := range held {
				ks = append(ks, k)
			}
			keys.Set(ks)
			v := router.EncodeAffinity(signerAt(t, ks, now), "srv", "web-1", now)
			cookies = append(cookies, issued{now, v})
			for _, c := range cookies {
				_, _, err := router.DecodeAffinity(keys, "srv", c.value, maxAge, now)
				live := now.Sub(c.at) < maxAge
				switch {
				case live && err != nil:
					t.Fatalf("max age %v: cookie issued at +%v refused at +%v: %v", maxAge, c.at.Sub(t0), now.Sub(t0), err)
				case !live && err == nil:
					t.Fatalf("max age %v: cookie issued at +%v accepted at +%v", maxAge, c.at.Sub(t0), now.Sub(t0))
				case !live && !errors.Is(err, router.ErrAffinityExpired) && !errors.Is(err, router.ErrAffinityKey):
					t.Fatalf("max age %v: old cookie: %v", maxAge, err)
				}
			}
			if len(cookies) > 400 {
				cookies = cookies[len(cookies)-400:]
			}
		}
		if len(held) > 4 {
			t.Errorf("max age %v: %d keys held, want at most 4", maxAge, len(held))
		}
	}
}

// signerAt is the key the router signs with at now: the newest started.
func signerAt(t *testing.T, ks []router.AffinityKey, now time.Time) router.AffinityKey {
	var best router.AffinityKey
	found := false
	for _, k := range ks {
		if k.Start <= now.Unix() && (!found || k.Start > best.Start) {
			best, found = k, true
		}
	}
	if !found {
		t.Fatalf("no key started at %v", now)
	}
	return best
}

func TestAffinityConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		c      AffinityConfig
		gossip bool
		want   string
	}{
		{AffinityConfig{Cookie: "srv", MaxAge: time.Hour}, false, "--gossip-key"},
		{AffinityConfig{Cookie: "a b", MaxAge: time.Hour}, true, "cookie name"},
		{AffinityConfig{Cookie: "sid", MaxAge: time.Hour}, true, "session cookie"},
		{AffinityConfig{Cookie: "srv", MaxAge: time.Millisecond}, true, "at least 1s"},
	} {
		if err := tc.c.validate(tc.gossip, "sid"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
	if err := (AffinityConfig{}).validate(false, ""); err != nil {
		t.Errorf("off: %v", err)
	}
}
