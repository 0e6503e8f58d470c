package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSetTunablesApplies: a limit and a timeout changed on a running
// router apply to what starts next; a bad value changes nothing.
func TestSetTunablesApplies(t *testing.T) {
	// A backend that accepts TCP and never answers, beside an echo.
	mute := serveTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	echo := newBackend(t, "echo", echoWS("echo", nil, nil))
	p := &poolPicker{pools: map[string][]Backend{
		DefaultPool: {echo},
		"mute":      {{ID: "mute", Addr: mute}},
	}}
	rt, front := newFront(t, Config{Picker: p, MaxConns: 1, HandshakeTimeout: time.Hour,
		Routes: []Route{{Path: "/mute", Pool: "mute"}}})

	c, _ := dial(t, wsURL(front, "/?session_id=a"), nil)
	roundTrip(t, c, websocket.MessageText, []byte("one"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, res, err := websocket.Dial(ctx, wsURL(front, "/?session_id=b"), nil); err == nil || res == nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second WebSocket at MaxConns 1: %v %v; want 503", res, err)
	}
	if err := rt.SetTunables(Tunables{MaxConns: -1}); err == nil || rt.Tunables().MaxConns != 1 {
		t.Fatalf("a negative limit: %v, in force %d", err, rt.Tunables().MaxConns)
	}
	if err := rt.SetTunables(Tunables{MaxConns: 3, HandshakeTimeout: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if got := rt.Tunables(); got.MaxConns != 3 || got.WSWriteTimeout != DefaultWSWriteTimeout || got.DialTimeout != DefaultDialTimeout {
		t.Fatalf("in force: %+v; want the limit set and defaults for the zeros", got)
	}
	c2, _ := dial(t, wsURL(front, "/?session_id=b"), nil)
	roundTrip(t, c2, websocket.MessageText, []byte("two"))
	roundTrip(t, c, websocket.MessageText, []byte("still"))
	// The handshake timeout was an hour at start: the client's 5 s would
	// end this dial first if the new one did not apply.
	if _, res, err := websocket.Dial(ctx, wsURL(front, "/mute?session_id=c"), nil); err == nil || res == nil || res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("dial to a mute backend after SetTunables: %v, %v; want 504", res, err)
	}
}
