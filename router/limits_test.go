package router

import (
	"context"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestLimiterConnsExact(t *testing.T) {
	l := newIPLimiter(3, 0, 0, 0)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 3 {
		if lim, _ := l.acquire(a, i%2 == 0); lim != "" {
			t.Fatalf("conn %d refused: %s", i, lim)
		}
	}
	if lim, wait := l.acquire(a, false); lim != LimitConnsPerIP || wait <= 0 {
		t.Fatalf("4th conn = %q, %v; want conns_per_ip with a wait", lim, wait)
	}
	if lim, _ := l.acquire(b, true); lim != "" {
		t.Fatalf("another address refused: %s", lim)
	}
	l.release(a)
	if lim, _ := l.acquire(a, false); lim != "" {
		t.Fatalf("after a release: %s", lim)
	}
	for range 3 {
		l.release(a)
	}
	l.release(b)
	if n := l.tracked(); n != 0 {
		t.Fatalf("%d addresses tracked with no connection; want 0", n)
	}
}

func TestLimiterRate(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newIPLimiter(0, 2, 4, 0) // 2/s, burst 4
	l.nowForTest = func() time.Time { return now }
	a := netip.MustParseAddr("2001:db8::1")
	for i := range 4 {
		if lim, _ := l.acquire(a, true); lim != "" {
			t.Fatalf("handshake %d of the burst refused", i)
		}
	}
	lim, wait := l.acquire(a, true)
	if lim != LimitHandshakeRate || wait != 500*time.Millisecond {
		t.Fatalf("5th handshake = %q, %v; want handshake_rate_per_ip, 500ms", lim, wait)
	}
	if lim, _ := l.acquire(a, false); lim != "" {
		t.Fatalf("a plain request is not a handshake, refused: %s", lim)
	}
	now = now.Add(500 * time.Millisecond)
	if lim, _ := l.acquire(a, true); lim != "" {
		t.Fatalf("after a refill: %s", lim)
	}
	if got := l.limited[1].Load(); got != 1 {
		t.Fatalf("rate refusals counted = %d; want 1", got)
	}
}

// TestLimiterBounded drives 1.5 M distinct addresses through a limiter
// bounded at 1 M: the map never holds more; addresses holding connections
// are never evicted, so their counts stay exact.
func TestLimiterBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("1.5 M addresses")
	}
	const bound = 1 << 20
	l := newIPLimiter(1, 1, 1, bound)
	held := netip.MustParseAddr("198.51.100.7")
	if lim, _ := l.acquire(held, false); lim != "" {
		t.Fatal(lim)
	}
	for i := range 1_500_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if lim, _ := l.acquire(a, true); lim != "" {
			t.Fatalf("address %d refused: %s", i, lim)
		}
		l.release(a) // kept: its bucket is empty
	}
	if n := l.tracked(); n > bound {
		t.Fatalf("%d addresses tracked; want at most %d", n, bound)
	}
	if lim, _ := l.acquire(held, false); lim != LimitConnsPerIP {
		t.Fatalf("the held address was forgotten: second conn = %q; want conns_per_ip", lim)
	}

	// Every slot holding a connection: a new address is refused, not
	// tracked past the bound.
	small := newIPLimiter(1, 0, 0, limiterShards) // one address a shard
	refused := 0
	for i := range 1000 {
		if lim, _ := small.acquire(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), false); lim == LimitTrackerFull {
			refused++
		}
	}
	if n := small.tracked(); n > limiterShards || refused == 0 {
		t.Fatalf("tracked %d (bound %d), refused %d; want a refusal", n, limiterShards, refused)
	}
}

// TestPerIPLimitWebSocket: past MaxConnsPerIP a client's WebSocket gets
// 429 with Retry-After before any backend is dialled; a client behind the
// same trusted proxy, and the slot a closed session frees, are unaffected.
func TestPerIPLimitWebSocket(t *testing.T) {
	var upgrades atomic.Int64
	ws := newBackend(t, "b1", echoWS("b1", nil, func(*http.Request) { upgrades.Add(1) }))
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{ws}}, MaxConnsPerIP: 2,
		Key: KeyConfig{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})
	from := func(ip string) *websocket.DialOptions {
		return &websocket.DialOptions{HTTPHeader: http.Header{"X-Forwarded-For": {ip}}}
	}
	c1, _ := dial(t, wsURL(front, "/?session_id=a"), from("2001:db8:1:2::1"))
	_, _ = dial(t, wsURL(front, "/?session_id=b"), from("2001:db8:1:2::99")) // same /64
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, res, err := websocket.Dial(ctx, wsURL(front, "/?session_id=c"), from("2001:db8:1:2::5"))
	if err == nil || res == nil || res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" {
		t.Fatalf("third websocket from one /64 = %v, %v; want 429 with Retry-After", res, err)
	}
	if n := upgrades.Load(); n != 2 {
		t.Fatalf("backend saw %d upgrades; want 2 (the refused one never reaches it)", n)
	}
	errorBody(t, get(t, front.URL+"/?session_id=a", http.Header{"X-Forwarded-For": {"2001:db8:1:2::7"}}), 429, errTooManyFromIPMsg)
	c3, _ := dial(t, wsURL(front, "/?session_id=d"), from("203.0.113.9"))
	roundTrip(t, c3, websocket.MessageText, []byte("other client"))

	c1.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the closed session's slot back", func() bool {
		c, _, err := websocket.Dial(ctx, wsURL(front, "/?session_id=e"), from("2001:db8:1:2::1"))
		if err != nil {
			return false
		}
		c.CloseNow()
		return true
	})
	if got := rt.LimitedCounts()[LimitConnsPerIP]; got < 2 {
		t.Fatalf("conns_per_ip refusals = %d; want >= 2", got)
	}
}
