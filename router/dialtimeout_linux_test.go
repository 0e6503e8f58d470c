package router

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// hangingAddr returns a loopback address whose connects hang: a listener
// with a backlog of 0 that never accepts, its queue filled, so the
// kernel drops the SYNs of any further connect.
func hangingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 4 { // fill the accept queue; these connects may hang too
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Skip("connects to a full listener complete here; can't make one hang")
	}
	return addr
}

// TestDialTimeoutFailsOver: a backend whose connect hangs is given up
// after DialTimeout, well inside the handshake timeout, and the next
// candidate answers; a DialTimeout set live applies the same way.
func TestDialTimeoutFailsOver(t *testing.T) {
	hang := Backend{ID: "hang", Addr: hangingAddr(t)}
	echo := newBackend(t, "echo", echoWS("echo", nil, nil))
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{hang, echo}},
		DialTimeout: 300 * time.Millisecond, HandshakeTimeout: time.Minute})
	start := time.Now()
	c, res := dial(t, wsURL(front, "/?session_id=a"), nil)
	if got := res.Header.Get("X-Backend"); got != "echo" {
		t.Fatalf("reached %q; want the next candidate, echo", got)
	}
	roundTrip(t, c, websocket.MessageText, []byte("hi"))
	t.Logf("failover after a hanging connect took %v", time.Since(start).Round(time.Millisecond))
	if err := rt.SetTunables(Tunables{DialTimeout: 200 * time.Millisecond, HandshakeTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, res := dial(t, wsURL(front, "/?session_id=b"), nil); res.Header.Get("X-Backend") != "echo" {
		t.Fatal("no failover after SetTunables")
	}
}
