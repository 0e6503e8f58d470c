//go:build unix

package node

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestWaitQueuedSeesBacklog checks the poll shed relies on: it reports a
// client only once one is in the backlog, and takes no descriptor to see
// it (the client is still there for Accept afterwards).
func TestWaitQueuedSeesBacklog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if queued, ok := waitQueued(ln); !ok || queued {
		t.Fatalf("empty backlog: queued=%v ok=%v; want false, true", queued, ok)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	queued := false
	for range 100 { // the handshake completes asynchronously
		var ok bool
		if queued, ok = waitQueued(ln); !ok {
			t.Fatal("waitQueued cannot poll a TCP listener")
		}
		if queued {
			break
		}
	}
	if !queued {
		t.Fatal("client in the backlog not reported")
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept after poll: %v", err)
	}
	s.Close()
	if _, ok := waitQueued(&net.TCPListener{}); ok {
		t.Fatal("zero listener reported pollable")
	}
}

// starvedTCP is a real TCP listener in a process out of descriptors:
// Accept fails with EMFILE while the reserve is held, and the backlog is
// the kernel's, so shed polls and accepts real clients.
type starvedTCP struct {
	*net.TCPListener
	spareHeld atomic.Bool
}

func (l *starvedTCP) Accept() (net.Conn, error) {
	if l.spareHeld.Load() {
		time.Sleep(50 * time.Microsecond) // a real accept(2) does not spin this fast either
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.TCPListener.Accept()
}

type starvedSpare struct{ l *starvedTCP }

func (s starvedSpare) Close() error { s.l.spareHeld.Store(false); return nil }

// TestShedKeepsUpWithIdleFlood queues 500 connections that never send a
// byte ahead of a real request on a listener out of descriptors: the
// request still gets its 503 within seconds. Waiting 20 ms for each idle
// one to speak, as the shed did, kept it queued for 10 s.
func TestShedKeepsUpWithIdleFlood(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := &starvedTCP{TCPListener: ln.(*net.TCPListener)}
	l := newReserveListener(st, "proxy", zerolog.Nop(), nil, func() (io.Closer, error) {
		st.spareHeld.Store(true)
		return starvedSpare{st}, nil
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	defer func() { l.Close(); <-done }()

	const idle = 500
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_ = c.SetDeadline(start.Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("request behind %d idle connections: %v after %v; want a 503", idle, err, time.Since(start))
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d; want 503", res.StatusCode)
	}
	t.Logf("503 after %v behind %d idle connections", time.Since(start), idle)
}
