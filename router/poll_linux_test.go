package router

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
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
