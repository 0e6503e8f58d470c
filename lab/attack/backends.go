//go:build linux

package main

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// hostile is a backend the campaign controls. The path of each request
// picks its behaviour (the node forwards the path as it is):
//
//	/h/ok        a valid 101 to an upgrade, then reads and discards
//	/h/noaccept  101 without Sec-WebSocket-Accept
//	/h/badaccept 101 with a wrong Sec-WebSocket-Accept
//	/h/stall     a valid 101, writes up to stallBytes, never reads again
//	/h/big       200 with a 64 MB body, written as fast as the peer takes it
//	/h/smuggled  counted: a request that must never reach a backend
//	anything else: 200 "hostile", keep-alive
//
// Its listening socket has a 4 KiB receive buffer, inherited by every
// accepted connection, so a node that writes to a stalled /h/stall blocks
// after a few KiB.
type hostile struct {
	ln       net.Listener
	mu       sync.Mutex
	held     map[net.Conn]struct{}
	wake     chan struct{} // closed by closeAll: stalled sessions end
	smuggled atomic.Int64
	requests atomic.Int64
	wg       sync.WaitGroup
}

// stallBytes bounds what each side of a stalled session writes: enough to
// fill the node's buffers toward a peer with a 4 KiB window.
const stallBytes = 256 << 10

func startHostile() (*hostile, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hostile{ln: ln, held: map[net.Conn]struct{}{}, wake: make(chan struct{})}
	h.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				if strings.Contains(err.Error(), "too many open files") {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				return
			}
			h.hold(c)
			h.wg.Go(func() { h.serve(c) })
		}
	})
	return h, nil
}

func (h *hostile) addr() string { return h.ln.Addr().String() }

func (h *hostile) hold(c net.Conn) {
	h.mu.Lock()
	h.held[c] = struct{}{}
	h.mu.Unlock()
}

func (h *hostile) release(c net.Conn) {
	h.mu.Lock()
	delete(h.held, c)
	h.mu.Unlock()
	c.Close()
}

func (h *hostile) heldCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

// closeAll closes every connection the hostile backend holds (the end of
// a class that stalls).
func (h *hostile) closeAll() {
	h.mu.Lock()
	close(h.wake)
	h.wake = make(chan struct{})
	cs := make([]net.Conn, 0, len(h.held))
	for c := range h.held {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

func (h *hostile) close() {
	h.ln.Close()
	h.closeAll()
	h.wg.Wait()
}

// serve answers requests on c until it fails or a mode ends it.
func (h *hostile) serve(c net.Conn) {
	defer h.release(c)
	br := bufio.NewReaderSize(c, 16<<10)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		h.requests.Add(1)
		path := req.URL.Path
		if path == "/h/smuggled" {
			h.smuggled.Add(1)
		}
		key := req.Header.Get("Sec-WebSocket-Key")
		upgrade := strings.EqualFold(req.Header.Get("Upgrade"), "websocket")
		switch {
		case upgrade && (path == "/h/ok" || path == "/h/stall"):
			fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acceptFor(key))
			if path == "/h/stall" {
				h.stall(c)
				return
			}
			io.Copy(io.Discard, br)
			return
		case upgrade && path == "/h/noaccept":
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			io.Copy(io.Discard, br)
			return
		case upgrade && path == "/h/badaccept":
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			io.Copy(io.Discard, br)
			return
		case path == "/h/big":
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 67108864\r\n\r\n")
			io.Copy(c, io.LimitReader(zeros{}, 64<<20))
			return
		}
		io.Copy(io.Discard, req.Body)
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhostile"); err != nil {
			return
		}
	}
}

// stall writes binary frames toward the client until stallBytes or until
// a write blocks for 200 ms, then holds c without reading until the class
// closes it.
func (h *hostile) stall(c net.Conn) {
	frame := ws.MustCompileFrame(ws.NewBinaryFrame(make([]byte, 16<<10)))
	for sent := 0; sent < stallBytes; sent += len(frame) {
		c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Write(frame); err != nil {
			break
		}
	}
	h.mu.Lock()
	wake := h.wake
	h.mu.Unlock()
	<-wake
}

// acceptFor is Sec-WebSocket-Accept for key (RFC 6455 §4.2.2).
func acceptFor(key string) string {
	s := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(s[:])
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// legit is the steady echo load whose round trips measure how well the
// node serves others during a class: conns WebSockets, each sending one
// 64-byte message every pace and timing its echo. A connection that fails
// is counted and dialled again.
type legit struct {
	mu   sync.Mutex
	rtts []time.Duration
	errs int64
	done chan struct{}
	wg   sync.WaitGroup
}

// window is what legit measured since the last take or reset.
type window struct {
	rtts []time.Duration
	errs int64
}

func startLegit(ctx context.Context, url func(i int) string, conns int, pace time.Duration) (*legit, error) {
	l := &legit{done: make(chan struct{})}
	first := make(chan error, conns)
	for i := range conns {
		l.wg.Go(func() { l.loop(ctx, url, i, pace, first) })
	}
	for range conns {
		if err := <-first; err != nil {
			l.stop()
			return nil, err
		}
	}
	return l, nil
}

func (l *legit) loop(ctx context.Context, url func(int) string, i int, pace time.Duration, first chan<- error) {
	msg := []byte(strings.Repeat("l", 64))
	frame := ws.MustCompileFrame(ws.MaskFrameWith(ws.NewTextFrame(msg), ws.NewMask()))
	reported := false
	for {
		select {
		case <-l.done:
			return
		default:
		}
		// Source addresses from the top of 127.0.0.x, apart from the
		// attackers' (which start at .2).
		c, br, err := dialWS(ctx, url(i), 250-i%200, 0)
		if !reported {
			first <- err
			reported = true
		}
		if err != nil {
			l.fail()
			select {
			case <-l.done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		var r io.Reader = c
		if br != nil {
			r = br
		}
		rb := bufio.NewReader(r)
		stop := make(chan struct{})
		go func() {
			select {
			case <-l.done:
			case <-stop:
			}
			c.Close()
		}()
		for {
			start := time.Now()
			c.SetDeadline(start.Add(10 * time.Second))
			_, err := c.Write(frame)
			if err == nil {
				var h ws.Header
				h, err = ws.ReadHeader(rb)
				if err == nil {
					_, err = io.CopyN(io.Discard, rb, h.Length)
				}
			}
			if err != nil {
				break
			}
			l.mu.Lock()
			l.rtts = append(l.rtts, time.Since(start))
			l.mu.Unlock()
			time.Sleep(pace)
		}
		close(stop)
		select {
		case <-l.done:
			return
		default:
		}
		l.fail()
	}
}

func (l *legit) fail() { l.mu.Lock(); l.errs++; l.mu.Unlock() }

func (l *legit) reset() { l.take() }

// take returns the window since the last take and starts a new one.
func (l *legit) take() window {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := window{rtts: l.rtts, errs: l.errs}
	l.rtts, l.errs = nil, 0
	return w
}

func (l *legit) stop() {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	l.wg.Wait()
}

// p99ms is the 99th percentile of d in milliseconds (0 when empty).
func p99ms(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return float64(d[(len(d)*99)/100]) / float64(time.Millisecond)
}
