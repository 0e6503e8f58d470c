package demo

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startEcho(t *testing.T, id string) *Echo {
	t.Helper()
	e := &Echo{ID: id}
	if err := e.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e
}

func TestEchoHTTP(t *testing.T) {
	e := startEcho(t, "web-1")
	resp, err := http.Get("http://" + e.Addr() + "/any/path")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "web-1" || resp.Header.Get("X-Backend") != "web-1" {
		t.Fatalf("GET = %d %q", resp.StatusCode, b)
	}
}

func TestEchoWebSocket(t *testing.T) {
	e := startEcho(t, "web-2")
	for _, mode := range []websocket.CompressionMode{websocket.CompressionDisabled, websocket.CompressionNoContextTakeover, websocket.CompressionContextTakeover} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, "ws://"+e.Addr()+"/chat?session_id=x", &websocket.DialOptions{
			CompressionMode: mode, CompressionThreshold: 1, Subprotocols: []string{"chat.v1"},
		})
		if err != nil {
			cancel()
			t.Fatalf("mode %v: dial: %v", mode, err)
		}
		c.SetReadLimit(1 << 20)
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "chat.v1" {
			t.Errorf("mode %v: subprotocol = %q", mode, got)
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); (mode != websocket.CompressionDisabled) != strings.Contains(ext, "permessage-deflate") {
			t.Errorf("mode %v: extensions = %q", mode, ext)
		}
		for _, msg := range []string{"hello", strings.Repeat("compressible ", 5000), "whoami", "second"} {
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatalf("mode %v: write: %v", mode, err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("mode %v: read: %v", mode, err)
			}
			want := msg
			if msg == "whoami" {
				want = "web-2"
			}
			if typ != websocket.MessageText || string(got) != want {
				t.Fatalf("mode %v: got %v %.40q; want %.40q", mode, typ, got, want)
			}
		}
		if err := c.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2, 255}); err != nil {
			t.Fatal(err)
		}
		if typ, got, err := c.Read(ctx); err != nil || typ != websocket.MessageBinary || len(got) != 4 {
			t.Fatalf("binary: %v %v %v", typ, got, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
		cancel()
	}
}

// A backend shut down mid-session drops its WebSockets.
func TestEchoShutdownDropsSessions(t *testing.T) {
	e := startEcho(t, "web-3")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+e.Addr()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	e.Shutdown(ctx)
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatal("read succeeded after the backend shut down")
	}
}
