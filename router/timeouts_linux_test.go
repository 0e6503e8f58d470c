package router

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// deafBackend completes the handshake on a small-buffered socket, then
// sends what send writes (if set) and never reads, until the test ends.
func deafBackend(t *testing.T, send func(c net.Conn)) Backend {
	t.Helper()
	done := make(chan struct{})
	lc := net.ListenConfig{Control: smallBuffers}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
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
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
					acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
				if send != nil {
					send(c)
				}
				<-done
			})
		}
	})
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	return Backend{ID: "deaf", Addr: ln.Addr().String()}
}

// smallRawClient is rawClient on a small-buffered socket.
func smallRawClient(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := net.Dialer{Control: smallBuffers}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /?session_id=s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d; want 101", res.StatusCode)
	}
	return c, br
}

// readClose reads frames until a close frame and returns its code, or -1
// if the connection ends first.
func readClose(br *bufio.Reader) int {
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			return -1
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(br, p); err != nil {
			return -1
		}
		if h.OpCode == ws.OpClose {
			if len(p) < 2 {
				return 0
			}
			return int(binary.BigEndian.Uint16(p))
		}
	}
}

// A backend that stops reading while its client sends is given
// WSWriteTimeout; then the client gets 1008 and the session ends.
func TestWSWriteTimeoutBackendStalls(t *testing.T) {
	relayModes(t, func(t *testing.T, goroutines bool) {
		b := deafBackend(t, nil)
		rt, err := New(Config{Picker: &fixedPicker{backends: []Backend{b}}, WSWriteTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		rt.dialHookForTest = smallBuffers
		rt.pollFailed = goroutines
		t.Cleanup(func() { rt.Close() })
		c, br := smallRawClient(t, smallFront(t, rt))
		var wg sync.WaitGroup
		defer wg.Wait()
		frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewBinaryFrame(make([]byte, 4000))))
		var written atomic.Int64
		wg.Go(func() { flood(c, frame, &written) })
		if code := readClose(br); code != int(CloseWriteTimeout) {
			t.Errorf("close code = %d; want %d", code, CloseWriteTimeout)
		}
		c.Close()
		waitFor(t, "the session to end", func() bool { return rt.ActiveWebSockets() == 0 })
		if n := rt.WSWriteTimeouts(); n != 1 {
			t.Errorf("WSWriteTimeouts = %d; want 1", n)
		}
	})
}

// A client that stops reading while its backend sends is given
// WSWriteTimeout; then the session is closed (no close frame can reach
// it) and counted.
func TestWSWriteTimeoutClientStalls(t *testing.T) {
	relayModes(t, func(t *testing.T, goroutines bool) {
		frame := ws.MustCompileFrame(ws.NewBinaryFrame(make([]byte, 4000)))
		b := deafBackend(t, func(c net.Conn) {
			var n atomic.Int64
			flood(c, frame, &n)
		})
		rt, err := New(Config{Picker: &fixedPicker{backends: []Backend{b}}, WSWriteTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		rt.dialHookForTest = smallBuffers
		rt.pollFailed = goroutines
		t.Cleanup(func() { rt.Close() })
		smallRawClient(t, smallFront(t, rt))
		waitFor(t, "the session to end", func() bool { return rt.ActiveWebSockets() == 0 })
		if n := rt.WSWriteTimeouts(); n != 1 {
			t.Errorf("WSWriteTimeouts = %d; want 1", n)
		}
	})
}

// An HTTP client that never reads a large response is cut off after
// HTTPWriteTimeout without progress; before, it held the response (and
// the backend's) forever.
func TestHTTPWriteTimeout(t *testing.T) {
	backendDone := make(chan error, 1)
	b := newBackend(t, "big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for range 1024 { // 64 MiB
			if _, err := w.Write(chunk); err != nil {
				backendDone <- err
				return
			}
		}
		backendDone <- nil
	}))
	rt, err := New(Config{Picker: &fixedPicker{backends: []Backend{b}}, HTTPWriteTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	front := smallFront(t, rt)
	d := net.Dialer{Control: smallBuffers}
	c, err := d.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /big?session_id=s HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case err := <-backendDone:
		if err == nil {
			t.Fatal("the backend wrote all 64 MiB to a client that reads nothing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the response to a client that reads nothing is still open")
	}
	// What the client got ends early.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("client read after %d bytes: %v", n, err)
	}
	if n >= 64<<20 {
		t.Errorf("client got %d bytes; want the response cut off", n)
	}
}

// A client that reads slowly but steadily gets the whole response, even
// when it takes longer than HTTPWriteTimeout: the bound is on progress.
func TestHTTPWriteTimeoutSlowReader(t *testing.T) {
	const size = 512 << 10
	b := newBackend(t, "big", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, size))
	}))
	const timeout = time.Second
	rt, err := New(Config{Picker: &fixedPicker{backends: []Backend{b}}, HTTPWriteTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	front := smallFront(t, rt)
	d := net.Dialer{Control: smallBuffers}
	c, err := d.Dial("tcp", front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /big?session_id=s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(&slowReader{c}, 4096)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil || n != size {
		t.Fatalf("body: %d bytes, %v; want %d", n, err, size)
	}
	t.Logf("a %d-byte response read slowly over %v with a %v write timeout", size, time.Since(start), timeout)
}

// slowReader reads at most 8 KiB every 10ms.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(10 * time.Millisecond)
	return s.r.Read(p[:min(len(p), 8<<10)])
}
