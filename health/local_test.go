package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestLocalError(t *testing.T) {
	dial := func(e syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", e)}
	}
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{dial(syscall.EMFILE), true},
		{dial(syscall.ENFILE), true},
		{dial(syscall.ENOBUFS), true},
		{dial(syscall.ENOMEM), true},
		{dial(syscall.EADDRNOTAVAIL), true},
		{fmt.Errorf("http: %w", dial(syscall.EMFILE)), true},
		{dial(syscall.ECONNREFUSED), false}, // the backend's answer
		{dial(syscall.EHOSTUNREACH), false},
		{dial(syscall.ECONNRESET), false},
		{context.DeadlineExceeded, false},
		{errors.New("status 500"), false},
		{nil, false},
	} {
		if got := LocalError(tt.err); got != tt.want {
			t.Errorf("LocalError(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}

func TestStarved(t *testing.T) {
	const timeout = 500 * time.Millisecond
	for _, tt := range []struct {
		late, took time.Duration
		want       bool
	}{
		{0, 10 * time.Millisecond, false},
		{50 * time.Millisecond, timeout, false},        // a busy machine, a timed-out check
		{2 * time.Second, 10 * time.Millisecond, true}, // the timer fired two seconds late
		{0, 3 * time.Second, true},                     // a 500 ms deadline took 3 s to fire
		{0, 2*timeout + 100*time.Millisecond, false},   // within slack
		{starvedLate, 0, false},                        // the bound itself is not late
	} {
		if got := starved(tt.late, tt.took, timeout); got != tt.want {
			t.Errorf("starved(late %v, took %v) = %v; want %v", tt.late, tt.took, got, tt.want)
		}
	}
}

// TestLocalErrorsAbstain: a node whose connects fail with EMFILE, active
// or passive, leaves an up backend up and counts the abstentions; once
// its connects fail for the backend's sake (refused), it votes down.
func TestLocalErrorsAbstain(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go acceptAndClose(ln)
	defer ln.Close()

	var mode atomic.Int32 // 0 connect, 1 EMFILE, 2 refused
	cfg := fastChecks()
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		switch mode.Load() {
		case 1:
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("socket", syscall.EMFILE)}
		case 2:
			return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	c, r := newChecker(t, cfg)
	c.Sync([]Target{{ID: "b", Addr: ln.Addr().String()}})
	waitFor(t, "up", func() bool { v := c.View("b"); return v.Checked && v.Up })

	mode.Store(1)
	emfile := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	for range 5 {
		c.Passive("b", emfile)
	}
	waitFor(t, "abstentions", func() bool { return c.Abstained() >= 10 })
	if v := c.View("b"); !v.Up {
		t.Fatalf("view after EMFILE = %+v (%s); want still up", v, r.last())
	}

	mode.Store(2)
	waitFor(t, "down", func() bool { return !c.View("b").Up })
}
