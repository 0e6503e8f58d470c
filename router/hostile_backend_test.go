package router

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// serveTCP is a test backend on loopback: each connection is served by fn
// in its own goroutine and closed after it; everything stops at cleanup.
func serveTCP(tb testing.TB, fn func(c net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
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
				fn(c)
			})
		}
	})
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// rawBackend serves each connection with fn after reading the handshake.
func rawBackend(t *testing.T, fn func(c net.Conn, req *http.Request)) Backend {
	t.Helper()
	addr := serveTCP(t, func(c net.Conn) {
		if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			fn(c, req)
		}
	})
	return Backend{ID: "raw", Addr: addr}
}

// rawClient sends an upgrade request to front and returns the conn with
// the answer's status line and headers read.
func rawClient(t *testing.T, addr string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, br, res
}

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// A backend that answers with endless headers gets 502, not the node's
// memory.
func TestBackendHugeHandshakeHeaders(t *testing.T) {
	b := rawBackend(t, func(c net.Conn, _ *http.Request) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nX-Junk: ")
		chunk := strings.Repeat("a", 64<<10)
		for range 64 { // 4 MiB, far past the cap
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	})
	_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	_, _, res := rawClient(t, strings.TrimPrefix(front.URL, "http://"))
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("status = %d; want 502", res.StatusCode)
	}
}

// A backend dying in the middle of a large frame must not get a close
// frame written into that frame's payload: the client sees the bytes that
// came, then the end of the connection.
func TestBackendDiesMidFrame(t *testing.T) {
	const declared, sent = 60000, 40000
	b := rawBackend(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
		c.Write([]byte{0x82, 126, declared >> 8, declared & 0xff})
		c.Write(make([]byte, sent))
	})
	_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	_, br, res := rawClient(t, strings.TrimPrefix(front.URL, "http://"))
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d; want 101", res.StatusCode)
	}
	got, _ := io.ReadAll(br)
	if len(got) != 4+sent {
		t.Fatalf("client got %d bytes after the 101; want the 4-byte header and %d payload bytes, nothing more", len(got), sent)
	}
}

// A frame header split over two reads (the backend writes it in pieces)
// reaches the client whole, and a drain's close frame still lands after
// the frame, not inside it.
func TestBackendSplitsFrameHeader(t *testing.T) {
	b := rawBackend(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
		time.Sleep(50 * time.Millisecond) // the 101 goes alone, so no early bytes
		frame := ws.MustCompileFrame(ws.NewBinaryFrame(make([]byte, 300)))
		for _, piece := range [][]byte{frame[:1], frame[1:3], frame[3:100], frame[100:]} {
			c.Write(piece)
			time.Sleep(20 * time.Millisecond)
		}
		io.Copy(io.Discard, c)
	})
	rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}})
	_, br, res := rawClient(t, strings.TrimPrefix(front.URL, "http://"))
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d; want 101", res.StatusCode)
	}
	h, err := ws.ReadHeader(br)
	if err != nil || h.Length != 300 || h.OpCode != ws.OpBinary {
		t.Fatalf("first frame %+v, %v; want binary of 300 bytes", h, err)
	}
	if _, err := io.ReadFull(br, make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	go rt.Drain(ctx, CloseGoingAway, 0)
	h, err = ws.ReadHeader(br)
	if err != nil || h.OpCode != ws.OpClose {
		t.Fatalf("second frame %+v, %v; want the drain's close", h, err)
	}
}
