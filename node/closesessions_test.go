package node

import (
	"net/http/httptest"
	"testing"
	"time"
)

func FuzzDecodeCloseIntent(f *testing.F) {
	f.Add(encodeCloseIntent(closeIntent{Spread: 30 * time.Second}))
	f.Add([]byte{1})
	f.Add([]byte{2, 0})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		ci, err := decodeCloseIntent(b)
		if err != nil {
			return
		}
		if ci.Spread < 0 || ci.Spread > MaxCloseSpread {
			t.Fatalf("decoded spread %v out of range", ci.Spread)
		}
		again, err := decodeCloseIntent(encodeCloseIntent(ci))
		if err != nil || again != ci {
			t.Fatalf("round trip of %v: %v, %v", ci, again, err)
		}
	})
}

func TestCloseIntentFitsItsKind(t *testing.T) {
	spec := closeSessionsSpec()
	v := encodeCloseIntent(closeIntent{Spread: MaxCloseSpread})
	if len(v) > spec.MaxValue {
		t.Fatalf("largest value %d bytes; the kind takes %d", len(v), spec.MaxValue)
	}
	if err := spec.Validate("web-1", v); err != nil {
		t.Fatal(err)
	}
	if err := spec.Validate("../x", v); err == nil {
		t.Fatal("a bad backend ID was accepted")
	}
}

func TestCloseSessionsParams(t *testing.T) {
	for _, tc := range []struct {
		query  string
		close  bool
		spread time.Duration
		bad    bool
	}{
		{"", false, 0, false},
		{"close_sessions=true", true, 0, false},
		{"close_sessions=true&spread=30s", true, 30 * time.Second, false},
		{"close_sessions=false", false, 0, false},
		{"close_sessions=yes", false, 0, true},
		{"spread=30s", false, 0, true},
		{"close_sessions=true&spread=-1s", false, 0, true},
		{"close_sessions=true&spread=11m", false, 0, true},
		{"close_sessions=true&spread=soon", false, 0, true},
	} {
		r := httptest.NewRequest("POST", "/v1/backends/web-1/drain?"+tc.query, nil)
		c, s, err := closeSessionsParams(r)
		if (err != nil) != tc.bad || c != tc.close || s != tc.spread {
			t.Errorf("%q: %v, %v, %v; want %v, %v, error %v", tc.query, c, s, err, tc.close, tc.spread, tc.bad)
		}
	}
}
