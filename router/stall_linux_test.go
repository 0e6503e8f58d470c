package router

import (
	"context"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// smallBuffers shrinks a socket's kernel buffers, so that a peer that
// stops reading stalls the relay after a few KiB instead of megabytes.
func smallBuffers(_, _ string, rc syscall.RawConn) error {
	return rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	})
}

// threadCount is the process's number of OS threads.
func threadCount(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}

// flood writes frames to c until a write fails, counting the bytes.
func flood(c net.Conn, frame []byte, written *atomic.Int64) {
	for {
		n, err := c.Write(frame)
		written.Add(int64(n))
		if err != nil {
			return
		}
	}
}

// stallingBackend accepts WebSocket handshakes on small-buffered sockets,
// then floods the client with frames and never reads (deafBackend, in
// timeouts_linux_test.go, with a flood to send).
func stallingBackend(t *testing.T, written *atomic.Int64) Backend {
	t.Helper()
	frame := ws.MustCompileFrame(ws.NewBinaryFrame(make([]byte, 4000)))
	return deafBackend(t, func(c net.Conn) { flood(c, frame, written) })
}

// smallFront serves rt on a listener whose accepted sockets have small
// buffers.
func smallFront(t *testing.T, rt *Router) string {
	t.Helper()
	lc := net.ListenConfig{Control: smallBuffers}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(rt)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}

// stallingClient opens a WebSocket through front on a small-buffered
// socket, then floods the backend with masked frames and never reads.
func stallingClient(t *testing.T, front string, written *atomic.Int64, wg *sync.WaitGroup) net.Conn {
	t.Helper()
	d := net.Dialer{Control: smallBuffers}
	c, err := d.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	// Read the 101 byte by byte, so that no frame is taken off the socket.
	var head []byte
	one := make([]byte, 1)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !strings.HasSuffix(string(head), "\r\n\r\n") {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("read 101: %v", err)
		}
		head = append(head, one[0])
	}
	if !strings.HasPrefix(string(head), "HTTP/1.1 101") {
		t.Fatalf("answer %q; want 101", head)
	}
	frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewBinaryFrame(make([]byte, 4000))))
	wg.Go(func() { flood(c, frame, written) })
	return c
}

// stallSessions returns how many sessions TestStalledPeersHoldNoThreads
// stalls: MESHLB_STALL_SESSIONS, or 300.
func stallSessions(t *testing.T) int {
	if v := os.Getenv("MESHLB_STALL_SESSIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MESHLB_STALL_SESSIONS=%q: want a count", v)
		}
		return n
	}
	return 300
}

// Sessions stalled in both directions (client and backend both stop
// reading while the other floods) must not hold an OS thread each: the
// node stays within GOMAXPROCS plus a few threads, and serves others.
func TestStalledPeersHoldNoThreads(t *testing.T) {
	n := stallSessions(t)
	var written atomic.Int64
	stall := stallingBackend(t, &written)
	echo := newBackend(t, "echo", echoWS("echo", nil, nil))
	picker := PickerFunc(func(_ string, key []byte, _ int) ([]Backend, error) {
		if string(key) == "live" {
			return []Backend{echo}, nil
		}
		return []Backend{stall}, nil
	})
	rt, err := New(Config{Picker: picker})
	if err != nil {
		t.Fatal(err)
	}
	rt.dialHookForTest = smallBuffers
	t.Cleanup(func() { rt.Close() })
	front := smallFront(t, rt)

	var writers sync.WaitGroup
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
		writers.Wait()
	})
	before := threadCount(t)
	for range n {
		conns = append(conns, stallingClient(t, front, &written, &writers))
	}
	// Stalled: no byte moved for a while, in any session, either way.
	last, still := written.Load(), 0
	deadline := time.Now().Add(30 * time.Second)
	for still < 5 {
		time.Sleep(100 * time.Millisecond)
		if now := written.Load(); now != last {
			last, still = now, 0
		} else {
			still++
		}
		if time.Now().After(deadline) {
			t.Fatal("the sessions did not stall")
		}
	}
	threads, limit := threadCount(t), runtime.GOMAXPROCS(0)+16
	t.Logf("%d sessions stalled both ways: %d threads (%d before), %d bytes written by the peers", n, threads, before, last)
	if threads > limit {
		t.Errorf("threads = %d with %d stalled sessions; want <= GOMAXPROCS+16 = %d", threads, n, limit)
	}
	// Stalled at the node too: every direction parked, none lost.
	parked := 0
	rt.mu.Lock()
	for _, c := range rt.conns {
		if c.upPark.Load() > parkWoken && c.downPark.Load() > parkWoken {
			parked++
		}
	}
	rt.mu.Unlock()
	if parked != n {
		t.Errorf("%d sessions have both directions parked; want all %d", parked, n)
	}
	if got := rt.ActiveWebSockets(); got != n {
		t.Errorf("ActiveWebSockets = %d; want all %d stalled sessions still open", got, n)
	}

	// Others are still served.
	live, _ := dial(t, "ws://"+front+"/?session_id=live", nil)
	roundTrip(t, live, websocket.MessageText, []byte("still here"))
}
