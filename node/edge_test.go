package node

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strings"
	"testing"
	"time"
)

const goodWSKey = "dGhlIHNhbXBsZSBub25jZQ=="

// TestEdgeRefusals sends bad requests to a node's proxy port, each both
// in a form the acceptor takes (an HTTP/1.1 GET with a plain Host) and
// in one it leaves to net/http (an absolute-form target), and checks that
// both ways answer alike.
func TestEdgeRefusals(t *testing.T) {
	addr := gobwasBackend(t)
	cfg := testConfig(t, "edge")
	cfg.Backends = []BackendSpec{{ID: "b", Addr: addr}}
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "ring", func() (bool, string) { return n.Status().Ring.Backends == 1, "waiting for the backend" })

	upgrade := func(extra string) string {
		return "Host: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + extra + "\r\n"
	}
	for _, tc := range []struct {
		label   string
		rest    string // after the request target
		status  int
		header  [2]string
		closing bool // the node must close the connection after answering
	}{
		{"valid", upgrade("Sec-WebSocket-Key: " + goodWSKey + "\r\nSec-WebSocket-Version: 13\r\n"), 101, [2]string{}, false},
		{"no key", upgrade("Sec-WebSocket-Version: 13\r\n"), 400, [2]string{}, true},
		{"3-character key", upgrade("Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n"), 400, [2]string{}, true},
		{"two keys", upgrade("Sec-WebSocket-Key: " + goodWSKey + "\r\nSec-WebSocket-Key: " + goodWSKey + "\r\nSec-WebSocket-Version: 13\r\n"), 400, [2]string{}, true},
		{"version 8", upgrade("Sec-WebSocket-Key: " + goodWSKey + "\r\nSec-WebSocket-Version: 8\r\n"), 426, [2]string{"Sec-WebSocket-Version", "13"}, true},
	} {
		for _, form := range []struct{ label, line string }{
			{"acceptor", "GET /ws?session_id=a HTTP/1.1\r\n"},
			{"net/http", "GET http://x/ws?session_id=a HTTP/1.1\r\n"},
		} {
			t.Run(tc.label+"/"+form.label, func(t *testing.T) {
				c, br, res := sendHead(t, n.ProxyAddr(), form.line+tc.rest)
				checkAnswer(t, c, br, res, tc.status, tc.header, tc.closing && form.label == "acceptor")
			})
		}
	}

	// Through net/http only: the acceptor takes no such request.
	for _, tc := range []struct {
		label   string
		head    string
		status  int
		header  [2]string
		closing bool
	}{
		{"http/1.0 upgrade", "GET /ws?session_id=a HTTP/1.0\r\n" + upgrade("Sec-WebSocket-Key: "+goodWSKey+"\r\nSec-WebSocket-Version: 13\r\n"), 400, [2]string{}, true},
		{"http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, [2]string{}, true},
		{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405, [2]string{"Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"}, false},
		{"content-length and chunked", "POST /?session_id=a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400, [2]string{}, true},
		{"chunked in HTTP/1.0", "POST /?session_id=a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400, [2]string{}, true},
		{"content-length and chunked, odd case", "POST /?session_id=a HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\ncontent-LENGTH: 4\r\n\r\n0\r\n\r\n", 400, [2]string{}, true},
	} {
		t.Run(tc.label, func(t *testing.T) {
			c, br, res := sendHead(t, n.ProxyAddr(), tc.head)
			checkAnswer(t, c, br, res, tc.status, tc.header, tc.closing)
		})
	}

	// A later request on a kept-alive connection reaches net/http alone,
	// which drops Content-Length before the router sees it: it is served
	// by Transfer-Encoding, and the connection closed (RFC 9112 6.1).
	t.Run("chunked on a kept-alive connection", func(t *testing.T) {
		c, br, res := sendHead(t, n.ProxyAddr(), "GET /plain?session_id=a HTTP/1.1\r\nHost: x\r\n\r\n")
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if _, err := io.WriteString(c, "POST /plain?session_id=a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("second answer: %v", err)
		}
		checkAnswer(t, c, br, res, res.StatusCode, [2]string{}, true)
	})
}

func sendHead(t *testing.T, addr, head string) (net.Conn, *bufio.Reader, *http.Response) {
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
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return c, br, res
}

// checkAnswer checks status and header and, if closing, that the node
// closes the connection after the body.
func checkAnswer(t *testing.T, c net.Conn, br *bufio.Reader, res *http.Response, status int, header [2]string, closing bool) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status = %d; want %d", res.StatusCode, status)
	}
	if k := header[0]; k != "" && res.Header.Get(k) != header[1] {
		t.Errorf("%s = %q; want %q", k, res.Header.Get(k), header[1])
	}
	if status == http.StatusSwitchingProtocols || !closing {
		return
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("after the answer: %v; want the connection closed", err)
	}
}

func isReset(err error) bool {
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && strings.Contains(err.Error(), "reset")
}

// FuzzHasLengthAndChunked checks the acceptor's framing check against
// textproto, which reads fields as net/http does before it drops
// Content-Length: wherever textproto parses a head, both agree.
func FuzzHasLengthAndChunked(f *testing.F) {
	for _, s := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 4\r\n\r\n",
		"POST / HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n X-Fold: Content-Length: 3\n\n",
		"GET / HTTP/1.1\r\nContent-Length:\r\nTransfer-Encoding:\r\n\r\n",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		got := hasLengthAndChunked(head)
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		_, cl := h["Content-Length"]
		_, te := h["Transfer-Encoding"]
		if want := te && (cl || strings.HasSuffix(line, " HTTP/1.0")); got != want {
			t.Fatalf("hasLengthAndChunked = %v; textproto reads Content-Length %v, Transfer-Encoding %v", got, cl, te)
		}
	})
}

// TestBackendBadSwitchThroughAcceptor: a backend whose 101 lacks the
// Sec-WebSocket-Accept for the client's key gets the client 502 on the
// acceptor's path too, and counts as a backend failure.
func TestBackendBadSwitchThroughAcceptor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	cfg := testConfig(t, "badswitch")
	cfg.Backends = []BackendSpec{{ID: "b", Addr: ln.Addr().String()}}
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "ring", func() (bool, string) { return n.Status().Ring.Backends == 1, "waiting for the backend" })
	c, br, res := sendHead(t, n.ProxyAddr(), "GET /ws?session_id=a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: "+goodWSKey+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	checkAnswer(t, c, br, res, http.StatusBadGateway, [2]string{}, true)
	if got := testutilCounter(t, n, "meshlb_backend_connect_failures_total"); got != 1 {
		t.Fatalf("backend failures = %v; want 1", got)
	}
}

// testutilCounter sums a counter family from the node's registry.
func testutilCounter(t *testing.T, n *Node, name string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
