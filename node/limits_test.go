package node

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSlowHeadersGet408AndHugeHeaders431(t *testing.T) {
	cfg := testConfig(t, "limits")
	cfg.HandshakeTimeout = 300 * time.Millisecond
	cfg.MaxHeaderBytes = 1024
	n := startNode(t, cfg)

	c, err := net.Dial("tcp", n.ProxyAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("GET /?session_id=slow HTTP/1.1\r\nHost: x\r\n")) // never finished
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to slow headers: %v", err)
	}
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status = %d; want 408", resp.StatusCode)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("408 after %v; want about the 300ms handshake timeout", d)
	}

	c2, err := net.Dial("tcp", n.ProxyAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n\r\n"))
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("huge headers: %v %v; want 431", resp, err)
	}

	// A connection that sends nothing (a browser's preconnect) is closed
	// without an answer.
	c4, err := net.Dial("tcp", n.ProxyAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	c4.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c4); err != nil || len(b) != 0 {
		t.Fatalf("silent connection got %q, %v; want a bare close", b, err)
	}

	// A prompt request on a kept-alive connection is not cut off later.
	c3, err := net.Dial("tcp", n.ProxyAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	br := bufio.NewReader(c3)
	for range 2 {
		c3.Write([]byte("GET /?session_id=x HTTP/1.1\r\nHost: x\r\n\r\n"))
		c3.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable { // no backends: 503 from the router
			t.Fatalf("keep-alive request: %v %v; want the router's 503", resp, err)
		}
		resp.Body.Close()
		time.Sleep(400 * time.Millisecond)
	}
}
