package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// reports collects what a Checker reports.
type reports struct {
	mu  sync.Mutex
	got []string
}

func (r *reports) report(id string, up bool, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, fmt.Sprintf("%s up=%v %s", id, up, detail))
}

func (r *reports) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return ""
	}
	return r.got[len(r.got)-1]
}

func (r *reports) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// acceptAndClose is a TCP backend that accepts and hangs up, until ln closes.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func fastChecks() CheckConfig {
	return CheckConfig{Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 2, Fall: 2}
}

func newChecker(t *testing.T, cfg CheckConfig) (*Checker, *reports) {
	t.Helper()
	r := &reports{}
	c, err := NewChecker(cfg, r.report, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, r
}

// TestTCPCheck: a listener that goes away is reported down after Fall
// failures, and up again after Rise successes when it comes back.
func TestTCPCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go acceptAndClose(ln)
	c, r := newChecker(t, fastChecks())
	c.Sync([]Target{{ID: "b", Addr: addr}})
	waitFor(t, "first determination", func() bool { return r.last() == "b up=true " })
	if c.LocallyDown("b") || !c.View("b").Checked {
		t.Fatal("view wrong after first success")
	}
	ln.Close()
	waitFor(t, "down", func() bool { return r.last() == "b up=false tcp: connection refused" })
	if !c.LocallyDown("b") {
		t.Fatal("LocallyDown false while down")
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	defer ln2.Close()
	waitFor(t, "up again", func() bool { return r.last() == "b up=true " })
	if n := r.count(); n != 3 {
		t.Fatalf("%d reports; want 3 (up, down, up): %v", n, r.got)
	}
	c.Sync(nil)
	if c.LocallyDown("b") || c.View("b").Checked {
		t.Fatal("a backend no longer checked still has a view")
	}
}

func TestHTTPCheck(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	cfg := fastChecks()
	cfg.HTTPPath = "/healthz"
	c, r := newChecker(t, cfg)
	c.Sync([]Target{{ID: "b", Addr: srv.Listener.Addr().String()}})
	waitFor(t, "up", func() bool { return r.last() == "b up=true " })
	status.Store(503)
	waitFor(t, "down on 503", func() bool { return r.last() == "b up=false http: status 503" })
	status.Store(302) // in the default range 200-399
	waitFor(t, "up on 302", func() bool { return r.last() == "b up=true " })
}

// TestPoolHTTPPath: a pool's own health path replaces the node's for its
// backends; the others keep the node's.
func TestPoolHTTPPath(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(200)
	}))
	defer srv.Close()
	cfg := fastChecks()
	cfg.HTTPPath = "/healthz"
	cfg.PoolHTTPPath = map[string]string{"chat": "/status"}
	c, r := newChecker(t, cfg)
	addr := srv.Listener.Addr().String()
	c.Sync([]Target{{ID: "chat-1", Addr: addr, Pool: "chat"}})
	waitFor(t, "chat-1 up on its pool's path", func() bool { return r.last() == "chat-1 up=true " })
	c.Sync([]Target{{ID: "chat-1", Addr: addr, Pool: "chat"}, {ID: "web-1", Addr: addr, Pool: "default"}})
	waitFor(t, "web-1 down on the node's path", func() bool { return r.last() == "web-1 up=false http: status 404" })
	bad := fastChecks()
	bad.PoolHTTPPath = map[string]string{"chat": "status"}
	if err := bad.WithDefaults().Validate(); err == nil {
		t.Error("a relative pool health path accepted")
	}
}

// TestPassiveBounded: router failures take a backend down at once (Fall of
// them), but passive failures alone never take more than the cap; the
// early active checks they ask for bring the backends back.
func TestPassiveBounded(t *testing.T) {
	gate := make(chan struct{})
	var d net.Dialer
	cfg := CheckConfig{Interval: time.Hour, Timeout: 5 * time.Second, Rise: 1, Fall: 2}
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		select { // active checks wait until the passive failures are in
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return d.DialContext(ctx, network, addr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	c, r := newChecker(t, cfg)
	var ts []Target
	for i := range 4 {
		ts = append(ts, Target{ID: fmt.Sprintf("b%d", i), Addr: ln.Addr().String()})
	}
	c.Sync(ts)
	refused := fmt.Errorf("dial: %w", syscall.ECONNREFUSED)
	for range 10 {
		for _, tg := range ts {
			c.Passive(tg.ID, refused)
		}
	}
	down := 0
	for _, tg := range ts {
		if c.LocallyDown(tg.ID) {
			down++
		}
	}
	if down != 2 {
		t.Fatalf("%d of 4 down from passive failures; want 2 (50 %%): %v", down, r.got)
	}
	if got := c.View("b0"); got.Up || got.Detail != "passive: connection refused" {
		t.Fatalf("view of b0 = %+v", got)
	}
	close(gate)
	waitFor(t, "early checks bring them back", func() bool {
		for _, tg := range ts {
			if c.LocallyDown(tg.ID) {
				return false
			}
		}
		return true
	})
}

func TestCheckConfigValidate(t *testing.T) {
	if err := (CheckConfig{}).WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, broken := range map[string]func(*CheckConfig){
		"rise 0":       func(c *CheckConfig) { c.Rise = -1 },
		"relative":     func(c *CheckConfig) { c.HTTPPath = "healthz" },
		"status range": func(c *CheckConfig) { c.StatusMin, c.StatusMax = 500, 200 },
		"timeout":      func(c *CheckConfig) { c.Timeout = -1 },
	} {
		c := CheckConfig{}.WithDefaults()
		broken(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: validated", name)
		}
	}
	for in, want := range map[string][2]int{"200-399": {200, 399}, "204": {204, 204}} {
		lo, hi, err := ParseStatusRange(in)
		if err != nil || lo != want[0] || hi != want[1] {
			t.Errorf("ParseStatusRange(%q) = %d, %d, %v", in, lo, hi, err)
		}
	}
	for _, in := range []string{"", "abc", "399-200", "99", "200-600"} {
		if _, _, err := ParseStatusRange(in); err == nil {
			t.Errorf("ParseStatusRange(%q) accepted", in)
		}
	}
}
