package router

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
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
