package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestNewValidates(t *testing.T) {
	p := &fixedPicker{}
	for _, tt := range []struct {
		label string
		cfg   Config
	}{
		{"nil picker", Config{}},
		{"negative dial timeout", Config{Picker: p, DialTimeout: -1}},
		{"negative max conns", Config{Picker: p, MaxConns: -1}},
		{"bad cookie name", Config{Picker: p, SessionCookie: "a b"}},
		{"bad key sources", Config{Picker: p, Key: KeyConfig{Sources: "nonsense:x"}}},
	} {
		t.Run(tt.label, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New = nil error; want an error")
			}
		})
	}
	rt, err := New(Config{Picker: p, Retries: -3})
	if err != nil {
		t.Fatal(err)
	}
	if rt.cfg.Retries != 0 || rt.cfg.DialTimeout != DefaultDialTimeout || rt.cfg.HandshakeTimeout != DefaultHandshakeTimeout {
		t.Errorf("defaults = %+v", rt.cfg)
	}
}

func TestStatusError(t *testing.T) {
	for _, tt := range []struct {
		err  error
		code int
	}{
		{errNoKey, 400},
		{fmt.Errorf("pick backend: %w", ErrNoBackends), 503},
		{errTooManyConns, 503},
		{errDraining, 503},
		{&dialError{errors.New("connection refused")}, 502},
		{&dialError{os.ErrDeadlineExceeded}, 502},                       // unreachable, not slow
		{&dialError{os.NewSyscallError("socket", syscall.EMFILE)}, 503}, // the node is full, not the backend broken
		{os.ErrDeadlineExceeded, 504},
		{context.DeadlineExceeded, 504},
		{&clientGoneError{context.Canceled}, 502}, // 499 is no status; see statusError
		{errors.New("garbage answer"), 502},
	} {
		if code, _ := statusError(tt.err); code != tt.code {
			t.Errorf("statusError(%v) = %d; want %d", tt.err, code, tt.code)
		}
	}
}

// errorBody checks a JSON error answer.
func errorBody(t *testing.T, res *http.Response, code int, msg string) {
	t.Helper()
	defer res.Body.Close()
	var body struct{ Error string }
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("body: %v", err)
	}
	if res.StatusCode != code || body.Error != msg || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q (%s); want %d %q (application/json)", res.StatusCode, body.Error, res.Header.Get("Content-Type"), code, msg)
	}
}

func get(t *testing.T, url string, h http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHTTPProxy(t *testing.T) {
	b := newBackend(t, "b1", httpEcho("b1"))
	p := &fixedPicker{backends: []Backend{b}}
	_, front := newFront(t, Config{Picker: p})

	res := get(t, front.URL+"/a/b?session_id=k&q=1", http.Header{"X-Forwarded-For": {"6.6.6.6"}})
	if got, want := readBody(t, res), "GET /a/b?session_id=k&q=1 "; got != want {
		t.Errorf("body = %q; want %q", got, want)
	}
	if got := p.lastKey(); got != "k" {
		t.Errorf("picker asked for key %q; want the session_id k", got)
	}
	if got := res.Header.Get("X-Seen-XFF"); got != "127.0.0.1" {
		t.Errorf("backend saw X-Forwarded-For %q; want 127.0.0.1 (the untrusted client's header dropped)", got)
	}
	if got := res.Header.Get("X-Seen-Host"); got != front.Listener.Addr().String() {
		t.Errorf("backend saw Host %q; want the client's", got)
	}

	res, err := http.Post(front.URL+"/post?session_id=k", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if got, want := readBody(t, res), "POST /post?session_id=k payload"; got != want {
		t.Errorf("body = %q; want %q", got, want)
	}
}

func TestHTTPTrustedProxyChain(t *testing.T) {
	b := newBackend(t, "b1", httpEcho("b1"))
	_, front := newFront(t, Config{
		Picker: &fixedPicker{backends: []Backend{b}},
		Key:    KeyConfig{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}},
	})
	res := get(t, front.URL+"/?session_id=k", http.Header{
		"X-Forwarded-For":   {"1.2.3.4"},
		"X-Forwarded-Proto": {"https"},
	})
	if got, want := res.Header.Get("X-Seen-XFF"), "1.2.3.4, 127.0.0.1"; got != want {
		t.Errorf("X-Forwarded-For = %q; want %q", got, want)
	}
	if got := res.Header.Get("X-Seen-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto = %q; want the trusted proxy's https", got)
	}
}

func TestHTTPErrors(t *testing.T) {
	t.Run("no backends", func(t *testing.T) {
		_, front := newFront(t, Config{Picker: &fixedPicker{}})
		errorBody(t, get(t, front.URL+"/?session_id=k", nil), 503, "no backends")
	})
	t.Run("no routing key", func(t *testing.T) {
		_, front := newFront(t, Config{Picker: &fixedPicker{}, Key: KeyConfig{Sources: "header:X-Session-ID"}})
		errorBody(t, get(t, front.URL+"/", nil), 400, "no routing key")
	})
	t.Run("all refuse", func(t *testing.T) {
		_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{{ID: "a", Addr: refusingAddr(t)}}}})
		errorBody(t, get(t, front.URL+"/?session_id=k", nil), 502, "backend unavailable")
	})
	t.Run("response header timeout", func(t *testing.T) {
		release := make(chan struct{})
		b := newBackend(t, "slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer close(release)
		_, front := newFront(t, Config{
			Picker:                &fixedPicker{backends: []Backend{b}},
			ResponseHeaderTimeout: 100 * time.Millisecond,
		})
		errorBody(t, get(t, front.URL+"/?session_id=k", nil), 504, "backend timeout")
	})
}

func TestHTTPFailover(t *testing.T) {
	owner := Backend{ID: "dead", Addr: refusingAddr(t)}
	next := newBackend(t, "b2", httpEcho("b2"))
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
	res, err := http.Post(front.URL+"/?session_id=k", "text/plain", strings.NewReader("body survives"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if got := res.Header.Get("X-Backend"); got != "b2" {
		t.Fatalf("served by %q; want b2", got)
	}
	if got, want := readBody(t, res), "POST /?session_id=k body survives"; got != want {
		t.Errorf("body = %q; want %q", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failed) != 1 || failed[0] != owner {
		t.Fatalf("OnFailure saw %v; want [%v]", failed, owner)
	}
}

func TestHTTPSessionCookie(t *testing.T) {
	b1 := newBackend(t, "b1", httpEcho("b1"))
	b2 := newBackend(t, "b2", httpEcho("b2"))
	b3 := newBackend(t, "b3", httpEcho("b3"))
	p := hashPicker{backends: []Backend{b1, b2, b3}}
	_, front := newFront(t, Config{
		Picker:        p,
		SessionCookie: "meshlb_sid",
		Key:           KeyConfig{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}},
	})

	res := get(t, front.URL+"/", http.Header{"X-Forwarded-Proto": {"https"}})
	sc := parseSetCookie(t, res.Header, "meshlb_sid")
	if len(sc.Value) != 32 || !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" ||
		sc.MaxAge != int(DefaultSessionCookieMaxAge/time.Second) || !sc.Secure {
		t.Errorf("cookie = %+v; want a 128-bit hex ID, HttpOnly, SameSite=Lax, Path=/, Max-Age=86400, Secure", sc)
	}
	owner := p.owner(sc.Value).ID
	if got := res.Header.Get("X-Backend"); got != owner {
		t.Errorf("served by %s; want the owner of the session ID, %s", got, owner)
	}
	for range 5 {
		res := get(t, front.URL+"/", http.Header{"Cookie": {"meshlb_sid=" + sc.Value}})
		if res.Header.Get("Set-Cookie") != "" {
			t.Fatalf("request with the cookie got a new one: %q", res.Header.Get("Set-Cookie"))
		}
		if got := res.Header.Get("X-Backend"); got != owner {
			t.Fatalf("request with the cookie served by %s; want %s", got, owner)
		}
	}
	// Not Secure over plain HTTP without a trusted proxy's word.
	res = get(t, front.URL+"/", nil)
	if sc := parseSetCookie(t, res.Header, "meshlb_sid"); sc.Secure {
		t.Errorf("cookie over plain HTTP is Secure")
	}
}

func TestMaxConns(t *testing.T) {
	ws := newBackend(t, "b1", echoWS("b1", nil, nil))
	_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{ws}}, MaxConns: 1})
	c, _ := dial(t, wsURL(front, "/?session_id=k"), nil)
	roundTrip(t, c, websocket.MessageText, []byte("x"))

	errorBody(t, get(t, front.URL+"/?session_id=k", nil), 503, "too many connections")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, res, err := websocket.Dial(ctx, wsURL(front, "/?session_id=k"), nil)
	if err == nil || res == nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second websocket = %v, %v; want 503", res, err)
	}

	c.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "a free slot", func() bool {
		res := get(t, front.URL+"/?session_id=k", nil)
		io.Copy(io.Discard, res.Body)
		return res.StatusCode != http.StatusServiceUnavailable
	})
}

// FuzzHandshake writes arbitrary bytes as a request to a Router behind a
// real listener: no panic, no leak, bounded time.
func FuzzHandshake(f *testing.F) {
	for _, seed := range []string{
		"GET /?session_id=a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"POST /?session_id=a HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc",
		"GET /?session_id=a HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /\x7f?session_id=%zz HTTP/1.1\r\nHost: \r\nConnection: upgrade, keep-alive, X-Foo\r\nUpgrade: WebSocket\r\nX-Foo: 1\r\n\r\n",
		"\x00\x01garbage\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	ws := newBackendF(f, echoWS("b1", nil, nil))
	rt, err := New(Config{
		Picker:           &fixedPicker{backends: []Backend{ws}},
		SessionCookie:    "sid",
		HandshakeTimeout: time.Second,
		WSIdleTimeout:    200 * time.Millisecond,
	})
	if err != nil {
		f.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := &http.Server{Handler: rt, ReadHeaderTimeout: time.Second, MaxHeaderBytes: 8 << 10}
	var served sync.WaitGroup
	served.Go(func() { srv.Serve(ln) })
	f.Cleanup(func() {
		rt.Close()
		srv.Close()
		served.Wait()
	})

	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(raw)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		start := time.Now()
		io.Copy(io.Discard, c)
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Fatalf("connection open for %v", d)
		}
	})
}

// newBackendF is newBackend for fuzz targets.
func newBackendF(f *testing.F, h http.Handler) Backend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	var served sync.WaitGroup
	served.Go(func() { srv.Serve(ln) })
	f.Cleanup(func() { srv.Close(); served.Wait() })
	return Backend{ID: "b1", Addr: ln.Addr().String()}
}
