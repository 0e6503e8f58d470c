package router

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
)

// fixedPicker returns the same ordered candidates for every key and
// records the keys it was asked about.
type fixedPicker struct {
	backends []Backend

	mu   sync.Mutex
	keys []string
}

func (p *fixedPicker) Pick(_ string, key []byte, n int) ([]Backend, error) {
	p.mu.Lock()
	p.keys = append(p.keys, string(key))
	p.mu.Unlock()
	if len(p.backends) == 0 {
		return nil, ErrNoBackends
	}
	return p.backends[:min(n, len(p.backends))], nil
}

func (p *fixedPicker) lastKey() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.keys) == 0 {
		return ""
	}
	return p.keys[len(p.keys)-1]
}

// hashPicker makes backends[fnv(key) % n] the owner, the others follow.
type hashPicker struct{ backends []Backend }

func (p hashPicker) owner(key string) Backend {
	h := fnv.New32a()
	h.Write([]byte(key))
	return p.backends[int(h.Sum32()%uint32(len(p.backends)))]
}

func (p hashPicker) Pick(_ string, key []byte, n int) ([]Backend, error) {
	o := p.owner(string(key))
	out := []Backend{o}
	for _, b := range p.backends {
		if b != o && len(out) < n {
			out = append(out, b)
		}
	}
	return out, nil
}

// newBackend serves h on loopback and names it id.
func newBackend(t *testing.T, id string, h http.Handler) Backend {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return Backend{ID: id, Addr: srv.Listener.Addr().String()}
}

// refusingAddr returns an address whose listener is closed: dialling it
// is refused.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// echoWS is a WebSocket backend that echoes every message. It names
// itself in an X-Backend header of its 101 and calls onConn, if set, with
// each upgrade request.
func echoWS(id string, opts *websocket.AcceptOptions, onConn func(*http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if onConn != nil {
			onConn(r)
		}
		w.Header().Set("X-Backend", id)
		c, err := websocket.Accept(w, r, opts)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(4 << 20)
		ctx := context.Background()
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, p); err != nil {
				return
			}
		}
	}
}

// httpEcho answers with its id in X-Backend, the request's method, path
// and body, and the forwarding headers it saw.
func httpEcho(id string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", id)
		w.Header().Set("X-Seen-XFF", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Proto", r.Header.Get("X-Forwarded-Proto"))
		io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+string(body))
	}
}

// newFront builds a Router from cfg (Picker required) and serves it on
// loopback. Cleanup closes the router first, then the server.
func newFront(t *testing.T, cfg Config) (*Router, *httptest.Server) {
	t.Helper()
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel)
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { rt.Close() })
	return rt, srv
}

func wsURL(srv *httptest.Server, path string) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + path
}

func dial(t *testing.T, url string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, res, err := websocket.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	c.SetReadLimit(4 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return c, res
}

// roundTrip sends p and expects it back.
func roundTrip(t *testing.T, c *websocket.Conn, typ websocket.MessageType, p []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, p); err != nil {
		t.Fatalf("write: %v", err)
	}
	gt, got, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if gt != typ || string(got) != string(p) {
		t.Fatalf("echo = %v %d bytes; want %v %d bytes", gt, len(got), typ, len(p))
	}
}

// readCloseStatus reads until the connection fails and returns the close
// status the router or backend sent, or -1.
func readCloseStatus(t *testing.T, c *websocket.Conn, within time.Duration) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("no close within %v", within)
			}
			return websocket.CloseStatus(err)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
