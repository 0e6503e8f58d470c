package router

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// A relay direction parked on a client that reads nothing is let go by
// the session's close at once: nothing waits in the kernel for it.
func TestCloseWakesBlockedRelayWrite(t *testing.T) {
	b := rawBackend(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
		frame := append([]byte{0x82, 126, 0xff, 0x00}, make([]byte, 0xff00)...)
		for {
			if _, err := c.Write(frame); err != nil {
				return
			}
		}
	})
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	_, _, res := rawClient(t, strings.TrimPrefix(front.URL, "http://"))
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d; want 101", res.StatusCode)
	}
	var c *wsConn
	waitFor(t, "a relay direction parked on the client", func() bool {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		for _, s := range rt.conns {
			c = s
		}
		return c != nil && c.downPark.Load() > parkWoken
	})
	t0 := time.Now()
	rt.Close()
	if el := time.Since(t0); el > 500*time.Millisecond {
		t.Errorf("Close took %v with a relay write blocked; want it woken at once", el)
	}
}

// A drain's close frame, requested while the backend → client direction
// is parked with bytes the client has not taken, lands after them, on a
// frame boundary, once the client reads again.
func TestDrainWhileParked(t *testing.T) {
	const frames = 200
	frame := ws.MustCompileFrame(ws.NewBinaryFrame(make([]byte, 4000)))
	b := deafBackend(t, func(c net.Conn) {
		for range frames {
			if _, err := c.Write(frame); err != nil {
				return
			}
		}
	})
	rt, err := New(Config{Picker: &fixedPicker{backends: []Backend{b}}})
	if err != nil {
		t.Fatal(err)
	}
	rt.dialHookForTest = smallBuffers
	t.Cleanup(func() { rt.Close() })
	_, br := smallRawClient(t, smallFront(t, rt))
	var c *wsConn
	waitFor(t, "the relay to park on the client", func() bool {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		for _, s := range rt.conns {
			c = s
		}
		return c != nil && c.downPark.Load() > parkWoken
	})
	ctx, cancel := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	go func() { drained <- rt.Drain(ctx, CloseGoingAway, 0) }()
	defer func() { cancel(); <-drained }()
	time.Sleep(20 * time.Millisecond) // let the close request wait behind the parked bytes

	got := 0
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatalf("after %d whole frames: %v; want a close frame", got, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatalf("frame %d: %v", got, err)
		}
		if h.OpCode == ws.OpClose {
			if code := binary.BigEndian.Uint16(p); code != CloseGoingAway {
				t.Errorf("close code %d; want %d", code, CloseGoingAway)
			}
			break
		}
		if h.OpCode != ws.OpBinary || h.Length != 4000 {
			t.Fatalf("frame %d: %+v; want binary of 4000 bytes (the close frame must not cut one)", got, h)
		}
		got++
	}
	t.Logf("%d whole frames, then the close", got)
	if got == 0 || got > frames {
		t.Errorf("%d frames before the close; want some of the %d, whole", got, frames)
	}
}

// A backend's sessions all ending at once hand their ends to workers; the
// workers that ended them are let go once a trim period has not needed
// them, not kept parked for good. The soak saw a node's goroutines rise by
// one burst of workers per backend kill.
func TestBurstOfEndsLeavesNoParkedWorkers(t *testing.T) {
	const sessions = 32
	kill := make(chan struct{})
	b := rawBackend(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
		<-kill
		c.Close()
	})
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	var clients []net.Conn
	for range sessions {
		c, _, res := rawClient(t, strings.TrimPrefix(front.URL, "http://"))
		if res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status = %d; want 101", res.StatusCode)
		}
		clients = append(clients, c)
	}
	rt.mu.Lock()
	polls := rt.polls
	rt.mu.Unlock()
	if len(polls) == 0 {
		t.Fatal("no epoll loops: the relay did not take the sessions")
	}
	parked := func() int {
		n := 0
		for _, p := range polls {
			n += p.workers.Idle()
		}
		return n
	}
	close(kill)
	waitFor(t, "the ends' workers to park", func() bool { return parked() > 0 })
	for _, c := range clients {
		c.Close() // rather than answer the router's close frames
	}
	waitFor(t, "every session to end", func() bool {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		return len(rt.conns) == 0
	})
	// Trim as the pools' own loops do every period: the first sets the
	// mark, the second lets go of what stayed parked since.
	for range 2 {
		for _, p := range polls {
			p.workers.Trim()
		}
	}
	if n := parked(); n != 0 {
		t.Errorf("%d workers still parked after two trims with no work; want 0", n)
	}
	waitFor(t, "the workers to exit", func() bool { return goroutinesIn("router.(*poller).worker") == 0 })
}

// goroutinesIn counts the goroutines with fn in their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), fn+"(")
}
