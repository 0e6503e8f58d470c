package node

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/parkpool"
	"github.com/meshlb/meshlb/router"
)

// upgradeHeads are WebSocket upgrade heads for every key source, with the
// header shapes that make routing keys tricky.
var upgradeHeads = []struct{ label, head string }{
	{"query", "GET /ws?session_id=abc&x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"},
	{"query escaped", "GET /ws?session%5Fid=a%20b+c HTTP/1.1\r\nHost: x:8080\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n"},
	{"cookie", "GET /ws HTTP/1.1\r\nHost: x\r\nCookie: a=1; sid=cookie-key\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"two cookie lines", "GET /ws HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: sid=second\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"header", "GET /ws HTTP/1.1\r\nHost: x\r\nx-session-id:  hdr-key \r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"protocol", "GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: chat, key.proto-key\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"ip", "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"xff", "GET /ws HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"xff two lines", "GET /ws HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.7\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"forwarded", "GET /ws HTTP/1.1\r\nHost: x\r\nForwarded: for=\"[2001:db8::1]:4711\"\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{"bare LF", "GET /ws?session_id=lf HTTP/1.1\nHost: x\nConnection: upgrade\nUpgrade: websocket\n\n"},
}

func upgradeKeys(t testing.TB) *router.KeyExtractor {
	ke, err := router.NewKeyExtractor(router.KeyConfig{
		Sources:        "query:session_id,cookie:sid,header:X-Session-ID,protocol:key.,ip",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ke
}

// TestUpgradeKeySameAsNetHTTP checks that a head taken by the acceptor
// gives the router the same request, and so the same routing key, as
// net/http's server would.
func TestUpgradeKeySameAsNetHTTP(t *testing.T) {
	ke := upgradeKeys(t)
	got := make(chan *http.Request, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		w.WriteHeader(http.StatusNoContent)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })

	for _, tc := range upgradeHeads {
		t.Run(tc.label, func(t *testing.T) {
			head := []byte(tc.head)
			if n := headLen(head); n != len(head) {
				t.Fatalf("headLen = %d; want %d", n, len(head))
			}
			fast := parseUpgrade(head)
			if fast == nil {
				t.Fatal("parseUpgrade refused a plain upgrade")
			}
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(head); err != nil {
				t.Fatal(err)
			}
			var want *http.Request
			select {
			case want = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("net/http did not serve the head")
			}
			fast.RemoteAddr = want.RemoteAddr
			wk, ws, wok := ke.Key(want)
			fk, fs, fok := ke.Key(fast)
			if fk != wk || fs != ws || fok != wok {
				t.Fatalf("key = %q from %q (%v); net/http's %q from %q (%v)", fk, fs, fok, wk, ws, wok)
			}
			if fast.Host != want.Host || fast.RequestURI != want.RequestURI || fast.URL.String() != want.URL.String() {
				t.Fatalf("host, uri, url = %q %q %q; want %q %q %q", fast.Host, fast.RequestURI, fast.URL, want.Host, want.RequestURI, want.URL)
			}
			if !reflect.DeepEqual(fast.Header, want.Header) {
				t.Fatalf("header = %v; want %v", fast.Header, want.Header)
			}
		})
	}
}

func TestParseUpgradeLeavesTheRestToNetHTTP(t *testing.T) {
	for _, tc := range []struct{ label, head string }{
		{"not an upgrade", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"http/1.0", "GET /ws HTTP/1.0\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"absolute URI", "GET http://x/ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"control byte", "GET /ws HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"no host", "GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"two hosts", "GET /ws HTTP/1.1\r\nHost: x\r\nHost: y\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"odd host", "GET /ws HTTP/1.1\r\nHost: x/y\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"body", "GET /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"bad header", "GET /ws HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"},
	} {
		if r := parseUpgrade([]byte(tc.head)); r != nil {
			t.Errorf("%s: parseUpgrade took it; want it left to net/http", tc.label)
		}
	}
}

// FuzzUpgradeHead checks the acceptor's head reading against net/http's
// parser: where it sees a head end, http.ReadRequest stops there too, and
// a request it takes has the key net/http's parse of the bytes gives.
func FuzzUpgradeHead(f *testing.F) {
	for _, tc := range upgradeHeads {
		f.Add([]byte(tc.head))
	}
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\n"))
	f.Add([]byte("\r\nGET / HTTP/1.1\r\n\r\n"))
	ke := upgradeKeys(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		n := headLen(p)
		if n == 0 {
			return
		}
		if n > len(p) {
			t.Fatalf("headLen = %d past the end %d", n, len(p))
		}
		br := bufio.NewReader(bytes.NewReader(p))
		want, err := http.ReadRequest(br)
		if err != nil {
			if parseUpgrade(p[:n]) != nil {
				t.Fatalf("took a head net/http refuses: %v", err)
			}
			return
		}
		if rest := br.Buffered(); len(p)-rest != n {
			t.Fatalf("net/http read %d bytes of head; headLen says %d", len(p)-rest, n)
		}
		fast := parseUpgrade(p[:n])
		if fast == nil {
			return
		}
		delete(want.Header, "Host")
		want.RemoteAddr, fast.RemoteAddr = "127.0.0.1:1234", "127.0.0.1:1234"
		wk, _, _ := ke.Key(want)
		fk, _, _ := ke.Key(fast)
		if fk != wk || fast.Host != want.Host || !reflect.DeepEqual(fast.Header, want.Header) {
			t.Fatalf("key %q host %q; net/http's %q %q", fk, fast.Host, wk, want.Host)
		}
	})
}

// gobwasBackend answers WebSocket upgrades and echoes the bytes.
func gobwasBackend(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if _, err := ws.Upgrade(c); err != nil {
					return
				}
				_, _ = io.Copy(c, c) // echo raw: frames go back as they came
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// TestAcceptorServesUpgradesAndHandsOffTheRest drives a node's proxy
// port: a WebSocket through the acceptor, one past MaxConns (503 from the
// router, written by the acceptor), and plain HTTP through net/http on
// the same port.
func TestAcceptorServesUpgradesAndHandsOffTheRest(t *testing.T) {
	addr := gobwasBackend(t)
	cfg := testConfig(t, "acceptor")
	cfg.Backends = []BackendSpec{{ID: "b", Addr: addr}}
	cfg.Router.MaxConns = 1
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "ring", func() (bool, string) { return n.Status().Ring.Backends == 1, "waiting for the backend" })

	url := "ws://" + n.ProxyAddr() + "/ws?session_id=a"
	c, _, _, err := ws.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte("hello"))))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	echo := make([]byte, len(msg))
	if _, err := io.ReadFull(c, echo); err != nil || !bytes.Equal(echo, msg) {
		t.Fatalf("echo %q, %v; want %q", echo, err, msg)
	}

	_, _, _, err = ws.Dial(context.Background(), url)
	var st ws.StatusError
	if !errors.As(err, &st) || int(st) != http.StatusServiceUnavailable {
		t.Fatalf("second websocket: %v; want 503 (MaxConns 1)", err)
	}

	c.Close()
	waitFor(t, 5*time.Second, "slot back", func() (bool, string) {
		res, err := http.Get("http://" + n.ProxyAddr() + "/plain?session_id=a")
		if err != nil {
			return false, err.Error()
		}
		res.Body.Close()
		// The backend answers plain HTTP with gobwas's 400: net/http
		// and the router passed it on.
		return res.StatusCode == http.StatusBadRequest, res.Status
	})
}

// BenchmarkNodeHandshake opens and closes one WebSocket through a node's
// proxy port per iteration: the acceptor, the router, the backend dial and
// handshake, the hand-off to the epoll relay.
func BenchmarkNodeHandshake(b *testing.B) {
	addr := gobwasBackend(b)
	cfg := testConfig(b, "bench")
	cfg.Logger = cfg.Logger.Level(zerolog.ErrorLevel)
	cfg.Backends = []BackendSpec{{ID: "b", Addr: addr}}
	n := startNode(b, cfg)
	waitFor(b, 10*time.Second, "ring", func() (bool, string) { return n.Status().Ring.Backends == 1, "waiting for the backend" })
	url := "ws://" + n.ProxyAddr() + "/ws?session_id=bench"
	b.ReportAllocs()
	for b.Loop() {
		c, _, _, err := ws.Dial(context.Background(), url)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// TestAcceptorPROXYProtocol checks that an upgrade taken by the acceptor
// carries the client address from a PROXY protocol header, as one served
// by net/http does: the backend sees it in X-Forwarded-For.
func TestAcceptorPROXYProtocol(t *testing.T) {
	xff := make(chan string, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				u := ws.Upgrader{OnHeader: func(k, v []byte) error {
					if strings.EqualFold(string(k), "X-Forwarded-For") {
						select {
						case xff <- string(v):
						default:
						}
					}
					return nil
				}}
				if _, err := u.Upgrade(c); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, c)
			})
		}
	})
	cfg := testConfig(t, "proxyproto")
	cfg.ProxyProtocol = true
	cfg.Router.Key = router.KeyConfig{Sources: "ip", TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	cfg.Backends = []BackendSpec{{ID: "b", Addr: ln.Addr().String()}}
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "ring", func() (bool, string) { return n.Status().Ring.Backends == 1, "waiting for the backend" })

	c, err := net.Dial("tcp", n.ProxyAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Write([]byte("PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n" +
		"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v; want 101", res, err)
	}
	select {
	case got := <-xff:
		if got != "203.0.113.7" {
			t.Fatalf("backend saw X-Forwarded-For %q; want the PROXY source 203.0.113.7", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend saw no X-Forwarded-For")
	}
}

// pipeListener is a listener whose connections are the server ends of
// net.Pipes: it works inside a synctest bubble.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// A burst of connections (the soak's reconnects after a backend kill)
// grows the parked server goroutines; a trim period after it they are let
// go, not kept parked for the life of the node.
func TestBurstOfConnectionsLeavesNoParkedServers(t *testing.T) {
	const burst = 40
	synctest.Test(t, func(t *testing.T) {
		ln := newPipeListener()
		a := newAcceptor(ln, http.NotFoundHandler(), time.Second, zerolog.Nop())
		var wg sync.WaitGroup
		wg.Go(a.run)
		var clients []net.Conn
		for range burst {
			c, s := net.Pipe()
			clients = append(clients, c)
			ln.conns <- s
		}
		synctest.Wait() // every server reads a head that does not come
		time.Sleep(2 * time.Second)
		synctest.Wait() // the heads timed out together
		if got := a.servers.Idle(); got != burst {
			t.Fatalf("after a burst of %d connections: %d servers parked; want %d", burst, got, burst)
		}
		time.Sleep(2 * parkpool.TrimPeriod)
		synctest.Wait()
		if got := a.servers.Idle(); got != 0 {
			t.Errorf("two trim periods after the burst: %d servers parked; want 0", got)
		}
		a.Close()
		wg.Wait()
		for _, c := range clients {
			c.Close()
		}
	})
}
