package router

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
)

func TestWebSocketEcho(t *testing.T) {
	seen := make(chan *http.Request, 1)
	b := newBackend(t, "b1", echoWS("b1", nil, func(r *http.Request) { seen <- r }))
	_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})

	c, res := dial(t, wsURL(front, "/chat/room%201?session_id=abc&x=1"), &websocket.DialOptions{
		// coder/websocket accepts an Origin equal to the Host: the
		// client's Host must reach the backend.
		HTTPHeader: http.Header{"Origin": {front.URL}, "Authorization": {"Bearer t"}},
	})
	if got := res.Header.Get("X-Backend"); got != "b1" {
		t.Errorf("X-Backend = %q; want b1", got)
	}
	r := <-seen
	if got, want := r.URL.RequestURI(), "/chat/room%201?session_id=abc&x=1"; got != want {
		t.Errorf("backend request URI = %q; want %q", got, want)
	}
	for k, want := range map[string]string{
		"Origin":            front.URL,
		"Authorization":     "Bearer t",
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  front.Listener.Addr().String(),
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("backend saw %s = %q; want %q", k, got, want)
		}
	}
	if r.Host != front.Listener.Addr().String() {
		t.Errorf("backend saw Host %q; want the client's %q", r.Host, front.Listener.Addr())
	}

	roundTrip(t, c, websocket.MessageText, []byte("hello"))
	roundTrip(t, c, websocket.MessageBinary, []byte{0, 1, 2, 255})
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	roundTrip(t, c, websocket.MessageBinary, big)
	for i := range 200 {
		roundTrip(t, c, websocket.MessageText, []byte(strings.Repeat("m", i)))
	}
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Errorf("close handshake through the router: %v", err)
	}
}

func TestWebSocketSubprotocol(t *testing.T) {
	b := newBackend(t, "b1", echoWS("b1", &websocket.AcceptOptions{Subprotocols: []string{"b"}}, nil))
	_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	c, _ := dial(t, wsURL(front, "/?session_id=s"), &websocket.DialOptions{Subprotocols: []string{"a", "b"}})
	if got := c.Subprotocol(); got != "b" {
		t.Fatalf("subprotocol = %q; want b", got)
	}
	roundTrip(t, c, websocket.MessageText, []byte("x"))
}

func TestWebSocketCompression(t *testing.T) {
	for name, mode := range map[string]websocket.CompressionMode{
		"context-takeover":    websocket.CompressionContextTakeover,
		"no-context-takeover": websocket.CompressionNoContextTakeover,
	} {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, "b1", echoWS("b1", &websocket.AcceptOptions{
				CompressionMode: mode, CompressionThreshold: 1,
			}, nil))
			_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
			c, res := dial(t, wsURL(front, "/?session_id=s"), &websocket.DialOptions{
				CompressionMode: mode, CompressionThreshold: 1,
			})
			if ext := res.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
				t.Fatalf("Sec-WebSocket-Extensions = %q; want permessage-deflate", ext)
			}
			for i := range 20 {
				roundTrip(t, c, websocket.MessageText, bytes.Repeat([]byte("compress me "), 10*i+1))
			}
			roundTrip(t, c, websocket.MessageBinary, bytes.Repeat([]byte("z"), 1<<20))
		})
	}
}

func TestWebSocketNon101Relayed(t *testing.T) {
	b := newBackend(t, "b1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="x"`)
		w.Header().Set("X-Why", "token expired")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "login first")
	}))
	var failures atomic.Int32
	_, front := newFront(t, Config{
		Picker:    &fixedPicker{backends: []Backend{b, {ID: "b2", Addr: refusingAddr(t)}}},
		OnFailure: func(Backend, error) { failures.Add(1) },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, res, err := websocket.Dial(ctx, wsURL(front, "/?session_id=s"), nil)
	if err == nil {
		t.Fatal("dial succeeded; want 401")
	}
	if res == nil {
		t.Fatalf("no response: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("X-Why") != "token expired" ||
		res.Header.Get("WWW-Authenticate") != `Bearer realm="x"` || string(body) != "login first" {
		t.Errorf("got %d %v %q; want 401 with the backend's headers and body", res.StatusCode, res.Header, body)
	}
	if n := failures.Load(); n != 0 {
		t.Errorf("OnFailure called %d times; a complete answer is no failure", n)
	}
}

// hangUpAddr is a backend that reads the handshake and closes the
// connection without answering.
func hangUpAddr(t *testing.T) string {
	return rawBackend(t, func(net.Conn, *http.Request) {}).Addr
}

func TestWebSocketFailover(t *testing.T) {
	t.Run("refused", func(t *testing.T) { testWebSocketFailover(t, refusingAddr(t)) })
	t.Run("hung up", func(t *testing.T) { testWebSocketFailover(t, hangUpAddr(t)) })
}

func testWebSocketFailover(t *testing.T, ownerAddr string) {
	owner := Backend{ID: "dead", Addr: ownerAddr}
	next := newBackend(t, "b2", echoWS("b2", nil, nil))
	var mu sync.Mutex
	var failed []Backend
	_, front := newFront(t, Config{
		Picker: &fixedPicker{backends: []Backend{owner, next}},
		OnFailure: func(b Backend, err error) {
			mu.Lock()
			failed = append(failed, b)
			mu.Unlock()
		},
	})
	c, res := dial(t, wsURL(front, "/?session_id=s"), nil)
	if got := res.Header.Get("X-Backend"); got != "b2" {
		t.Fatalf("served by %q; want b2", got)
	}
	roundTrip(t, c, websocket.MessageText, []byte("x"))
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != 1 || failed[0] != owner {
		t.Fatalf("OnFailure saw %v; want [%v]", failed, owner)
	}
}

func TestWebSocketAllCandidatesRefuse(t *testing.T) {
	_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{
		{ID: "a", Addr: refusingAddr(t)}, {ID: "b", Addr: refusingAddr(t)},
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, res, err := websocket.Dial(ctx, wsURL(front, "/?session_id=s"), nil)
	if err == nil || res == nil || res.StatusCode != http.StatusBadGateway {
		t.Fatalf("dial = %v, %v; want 502", res, err)
	}
}

func TestWebSocketHandshakeTimeout(t *testing.T) {
	// A backend that accepts TCP and never answers.
	mute := serveTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })

	_, front := newFront(t, Config{
		Picker:           &fixedPicker{backends: []Backend{{ID: "mute", Addr: mute}}},
		HandshakeTimeout: 200 * time.Millisecond,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, res, err := websocket.Dial(ctx, wsURL(front, "/?session_id=s"), nil)
	if err == nil || res == nil || res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("dial = %v, %v; want 504", res, err)
	}
}

func TestDrain(t *testing.T) {
	b := newBackend(t, "b1", echoWS("b1", nil, nil))
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	const n = 5
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i], _ = dial(t, wsURL(front, "/?session_id=s"), nil)
		roundTrip(t, conns[i], websocket.MessageText, []byte("x"))
	}
	if got := rt.ActiveWebSockets(); got != n {
		t.Fatalf("ActiveWebSockets = %d; want %d", got, n)
	}

	codes := make(chan websocket.StatusCode, n)
	for _, c := range conns {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for {
				if _, _, err := c.Read(ctx); err != nil {
					codes <- websocket.CloseStatus(err)
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := rt.Drain(ctx, 1001, 200*time.Millisecond); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Drain took %v", d)
	}
	for range n {
		if code := <-codes; code != websocket.StatusGoingAway {
			t.Errorf("close status = %v; want 1001", code)
		}
	}
	if got := rt.ActiveWebSockets(); got != 0 {
		t.Errorf("ActiveWebSockets after drain = %d; want 0", got)
	}

	_, res, err := websocket.Dial(ctx, wsURL(front, "/?session_id=s"), nil)
	if err == nil || res == nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after drain = %v, %v; want 503", res, err)
	}
}

func TestDrainDeadlineClosesHard(t *testing.T) {
	b := newBackend(t, "b1", echoWS("b1", nil, nil))
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	// The client never reads, so it never answers the close frame.
	dial(t, wsURL(front, "/?session_id=s"), nil)
	waitFor(t, "one websocket", func() bool { return rt.ActiveWebSockets() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := rt.Drain(ctx, 1012, 0); err == nil {
		t.Fatal("Drain = nil; want the context's error")
	}
	if got := rt.ActiveWebSockets(); got != 0 {
		t.Errorf("ActiveWebSockets = %d; want 0", got)
	}
}

func TestWebSocketBackendLost(t *testing.T) {
	accepted := make(chan *websocket.Conn, 1)
	b := newBackend(t, "b1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		accepted <- c
	}))
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	c, _ := dial(t, wsURL(front, "/?session_id=s"), nil)
	(<-accepted).CloseNow() // dies without a close frame
	if code := readCloseStatus(t, c, 5*time.Second); code != websocket.StatusBadGateway {
		t.Fatalf("close status = %v; want %v", code, websocket.StatusBadGateway)
	}
	waitFor(t, "no websockets", func() bool { return rt.ActiveWebSockets() == 0 })
}

func TestWebSocketBackendCloses(t *testing.T) {
	b := newBackend(t, "b1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Close(4000, "done")
	}))
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	c, _ := dial(t, wsURL(front, "/?session_id=s"), nil)
	if code := readCloseStatus(t, c, 5*time.Second); code != 4000 {
		t.Fatalf("close status = %v; want the backend's 4000", code)
	}
	waitFor(t, "no websockets", func() bool { return rt.ActiveWebSockets() == 0 })
}

func TestWebSocketIdleTimeout(t *testing.T) {
	b := newBackend(t, "b1", echoWS("b1", nil, nil))
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}, WSIdleTimeout: 200 * time.Millisecond})
	c, _ := dial(t, wsURL(front, "/?session_id=s"), nil)
	roundTrip(t, c, websocket.MessageText, []byte("x"))
	start := time.Now()
	if code := readCloseStatus(t, c, 5*time.Second); code != websocket.StatusGoingAway {
		t.Fatalf("close status = %v; want 1001", code)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %v; want about the 200ms idle timeout", d)
	}
	waitFor(t, "no websockets", func() bool { return rt.ActiveWebSockets() == 0 })
}

// With pings every 50ms the client's pongs keep a quiet session alive well
// past the 200ms idle timeout that closes it without pings (see
// TestWebSocketIdleTimeout).
func TestWebSocketPingKeepsAlive(t *testing.T) {
	b := newBackend(t, "b1", echoWS("b1", nil, nil))
	_, front := newFront(t, Config{
		Picker:         &fixedPicker{backends: []Backend{b}},
		WSIdleTimeout:  200 * time.Millisecond,
		WSPingInterval: 50 * time.Millisecond,
	})
	c, _ := dial(t, wsURL(front, "/?session_id=s"), nil)
	msgs := make(chan string, 1)
	readErr := make(chan error, 1)
	go func() { // coder/websocket answers pings only while reading
		for {
			_, p, err := c.Read(context.Background())
			if err != nil {
				readErr <- err
				return
			}
			msgs <- string(p)
		}
	}()
	select {
	case err := <-readErr:
		t.Fatalf("closed while quiet: %v", err)
	case <-time.After(700 * time.Millisecond):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-msgs:
		if got != "still here" {
			t.Fatalf("echo = %q", got)
		}
	case err := <-readErr:
		t.Fatal(err)
	}
	c.CloseNow()
	<-readErr
}

func TestCloseClosesWebSockets(t *testing.T) {
	b := newBackend(t, "b1", echoWS("b1", nil, nil))
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	c, _ := dial(t, wsURL(front, "/?session_id=s"), nil)
	roundTrip(t, c, websocket.MessageText, []byte("x"))
	rt.Close()
	if got := rt.ActiveWebSockets(); got != 0 {
		t.Errorf("ActiveWebSockets = %d; want 0", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); err == nil {
		t.Error("read after Close succeeded")
	}
	rt.Close() // idempotent
}

func TestWebSocketSessionCookie(t *testing.T) {
	b1 := newBackend(t, "b1", echoWS("b1", nil, nil))
	b2 := newBackend(t, "b2", echoWS("b2", nil, nil))
	p := hashPicker{backends: []Backend{b1, b2}}
	_, front := newFront(t, Config{Picker: p, SessionCookie: "meshlb_sid", SessionCookieMaxAge: -1})
	_, res := dial(t, wsURL(front, "/"), nil)
	sc := parseSetCookie(t, res.Header, "meshlb_sid")
	if !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" || sc.MaxAge != 0 || sc.Secure {
		t.Errorf("cookie = %+v; want HttpOnly, SameSite=Lax, Path=/, no Max-Age, not Secure", sc)
	}
	if got, want := res.Header.Get("X-Backend"), p.owner(sc.Value).ID; got != want {
		t.Errorf("served by %s; want the owner of the session ID, %s", got, want)
	}
	_, res2 := dial(t, wsURL(front, "/"), &websocket.DialOptions{HTTPHeader: http.Header{"Cookie": {sc.String()}}})
	if res2.Header.Get("Set-Cookie") != "" {
		t.Errorf("second connection got a new cookie %q", res2.Header.Get("Set-Cookie"))
	}
	if got, want := res2.Header.Get("X-Backend"), p.owner(sc.Value).ID; got != want {
		t.Errorf("reconnect served by %s; want %s", got, want)
	}
}

func parseSetCookie(t *testing.T, h http.Header, name string) *http.Cookie {
	t.Helper()
	for _, v := range h.Values("Set-Cookie") {
		c, err := http.ParseSetCookie(v)
		if err == nil && c.Name == name {
			return c
		}
	}
	t.Fatalf("no Set-Cookie %s in %v", name, h)
	return nil
}

// Bytes that arrive right behind a handshake, from either side, must not
// be lost in a bufio.Reader (caddy issue 6273).
func TestWebSocketEarlyBytes(t *testing.T) {
	b := newBackend(t, "b1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := context.Background()
		if err := c.Write(ctx, websocket.MessageText, []byte("welcome")); err != nil {
			return
		}
		for {
			typ, p, err := c.Read(ctx)
			if err != nil || c.Write(ctx, typ, p) != nil {
				return
			}
		}
	}))
	_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})

	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte("hello"))))
	req := "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), frame...)); err != nil { // one write
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("answer = %d %v; want 101 with the backend's accept key", res.StatusCode, res.Header)
	}
	for _, want := range []string{"welcome", "hello"} {
		h, err := ws.ReadHeader(br)
		if err != nil || h.Length > 64 {
			t.Fatalf("frame header %+v, %v", h, err)
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			t.Fatal(err)
		}
		if h.OpCode != ws.OpText || string(p) != want {
			t.Fatalf("frame = %v %q; want text %q", h.OpCode, p, want)
		}
	}
}
