package router

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const goodKey = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455's sample nonce

// handshakeCases are client requests and the status the router answers,
// with the header that status needs. Each goes through a real listener.
var handshakeCases = []struct {
	label  string
	head   string
	status int
	header [2]string
}{
	{"valid", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + goodKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n", 101, [2]string{}},
	{"no key", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, [2]string{}},
	{"3-character key", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, [2]string{}},
	{"key of 15 bytes", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, [2]string{}},
	{"key not base64", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!=\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, [2]string{}},
	{"two keys", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + goodKey + "\r\nSec-WebSocket-Key: " + goodKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, [2]string{}},
	{"two keys in one line", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + goodKey + ", " + goodKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, [2]string{}},
	{"version 8", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + goodKey + "\r\nSec-WebSocket-Version: 8\r\n\r\n", 426, [2]string{"Sec-WebSocket-Version", "13"}},
	{"no version", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + goodKey + "\r\n\r\n", 426, [2]string{"Sec-WebSocket-Version", "13"}},
	{"two versions", "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + goodKey + "\r\nSec-WebSocket-Version: 13, 8\r\n\r\n", 426, [2]string{"Sec-WebSocket-Version", "13"}},
	{"http/1.0", "GET /?session_id=s HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + goodKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, [2]string{}},
	{"post", "POST /?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + goodKey + "\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n", 400, [2]string{}},
	{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, [2]string{}},
	{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, [2]string{"Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"}},
}

// TestClientHandshakeChecked sends each case to a Router behind net/http
// and checks the status, the header it needs, and that nothing but a
// valid upgrade reached the backend.
func TestClientHandshakeChecked(t *testing.T) {
	var reached atomic.Int32
	b := newBackend(t, "b1", echoWS("b1", nil, func(*http.Request) { reached.Add(1) }))
	_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	for _, tc := range handshakeCases {
		t.Run(tc.label, func(t *testing.T) {
			before := reached.Load()
			res := rawRequest(t, front.Listener.Addr().String(), tc.head)
			if res.StatusCode != tc.status {
				t.Fatalf("status = %d; want %d", res.StatusCode, tc.status)
			}
			if k := tc.header[0]; k != "" && res.Header.Get(k) != tc.header[1] {
				t.Errorf("%s = %q; want %q", k, res.Header.Get(k), tc.header[1])
			}
			want := int32(0)
			if tc.status == 101 {
				want = 1
			}
			if got := reached.Load() - before; got != want {
				t.Errorf("backend saw %d upgrades; want %d", got, want)
			}
		})
	}
}

// rawRequest writes head to addr and reads the answer's status and headers.
func rawRequest(t *testing.T, addr, head string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return res
}

// TestBackendSwitchChecked has backends answer 101 in broken ways: each
// gets 502 and one passive failure, and the client's connection is never
// tunnelled to them.
func TestBackendSwitchChecked(t *testing.T) {
	for _, tc := range []struct {
		label  string
		answer func(key string) string
		status int
	}{
		{"valid", func(k string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(k) + "\r\n\r\n"
		}, 101},
		{"no accept", func(string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		}, 502},
		{"wrong accept", func(string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey("AAAAAAAAAAAAAAAAAAAAAA==") + "\r\n\r\n"
		}, 502},
		{"two accepts", func(k string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(k) + "\r\nSec-WebSocket-Accept: " + acceptKey(k) + "\r\n\r\n"
		}, 502},
		{"no connection upgrade", func(k string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " + acceptKey(k) + "\r\n\r\n"
		}, 502},
		{"upgrade to something else", func(k string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(k) + "\r\n\r\n"
		}, 502},
		{"interim 100", func(string) string { return "HTTP/1.1 100 Continue\r\n\r\n" }, 502},
	} {
		t.Run(tc.label, func(t *testing.T) {
			b := rawBackend(t, func(c net.Conn, req *http.Request) {
				io.WriteString(c, tc.answer(req.Header.Get("Sec-WebSocket-Key")))
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			})
			var failures atomic.Int32
			_, front := newFront(t, Config{
				Picker:    &fixedPicker{backends: []Backend{b}},
				OnFailure: func(Backend, error) { failures.Add(1) },
			})
			_, _, res := rawClient(t, front.Listener.Addr().String())
			if res.StatusCode != tc.status {
				t.Fatalf("status = %d; want %d", res.StatusCode, tc.status)
			}
			want := int32(1)
			if tc.status == 101 {
				want = 0
			} else if !strings.Contains(res.Header.Get("Content-Type"), "json") {
				t.Errorf("content type %q; want the router's JSON error", res.Header.Get("Content-Type"))
			}
			if got := failures.Load(); got != want {
				t.Errorf("OnFailure called %d times; want %d", got, want)
			}
		})
	}
}

// FuzzCheckUpgrade feeds arbitrary request heads to net/http's parser and
// the router's checks: they never panic, and what they accept is an
// upgrade the backend can answer (one valid key, version 13).
func FuzzCheckUpgrade(f *testing.F) {
	for _, tc := range handshakeCases {
		f.Add([]byte(tc.head))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(string(head))))
		if err != nil {
			return
		}
		if checkRequest(req) != nil || !IsWebSocketUpgrade(req) {
			return
		}
		if req.Method != http.MethodGet || !req.ProtoAtLeast(1, 1) || req.ProtoMajor != 1 {
			t.Fatalf("accepted %s %s", req.Method, req.Proto)
		}
		keys := req.Header.Values("Sec-WebSocket-Key")
		if len(keys) != 1 || req.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Fatalf("accepted keys %q version %q", keys, req.Header.Values("Sec-WebSocket-Version"))
		}
		h := http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}, "Sec-Websocket-Accept": {acceptKey(strings.TrimSpace(keys[0]))}}
		if !validSwitch(h, keys[0]) {
			t.Fatalf("the right answer to key %q is refused", keys[0])
		}
	})
}

// TestDialGuardRefuses: a backend address the guard refuses is skipped
// for the next candidate, 502 when none is left, on both paths, and
// OnFailure does not hear of it (the backend is not at fault).
func TestDialGuardRefuses(t *testing.T) {
	good := newBackend(t, "good", echoWS("good", nil, nil))
	goodHTTP := newBackend(t, "good-http", httpEcho("good-http"))
	bad := newBackend(t, "bad", echoWS("bad", nil, nil))
	badAP := netip.MustParseAddrPort(bad.Addr)
	guard := func(ap netip.AddrPort) error {
		if ap == badAP {
			return errors.New("own listener")
		}
		return nil
	}
	for _, tc := range []struct {
		label  string
		cands  []Backend
		ws     bool
		status int
	}{
		{"websocket fails over", []Backend{bad, good}, true, 101},
		{"websocket, none left", []Backend{bad}, true, 502},
		{"http fails over", []Backend{bad, goodHTTP}, false, 200},
		{"http, none left", []Backend{bad}, false, 502},
	} {
		t.Run(tc.label, func(t *testing.T) {
			var failures atomic.Int32
			_, front := newFront(t, Config{
				Picker:    &fixedPicker{backends: tc.cands},
				DialGuard: guard,
				OnFailure: func(Backend, error) { failures.Add(1) },
			})
			var res *http.Response
			if tc.ws {
				_, _, res = rawClient(t, front.Listener.Addr().String())
			} else {
				res = get(t, front.URL+"/?session_id=s", nil)
				res.Body.Close()
			}
			if res.StatusCode != tc.status {
				t.Fatalf("status = %d; want %d", res.StatusCode, tc.status)
			}
			if n := failures.Load(); n != 0 {
				t.Errorf("OnFailure called %d times for a refused address; want 0", n)
			}
		})
	}
}
