//go:build linux

// Package wsload owns what the bench commands (proxybench, wsbench) share:
// the WebSocket client that loads a proxy or a backend (dialling from
// source addresses spread over 127.0.0.2..127.0.0.254, opening many idle
// WebSockets, echo load with messages kept in flight, the "whoami"
// question to an echo backend), readings of other processes in /proc (RSS,
// CPU ticks), stopping the processes under test, and small helpers for
// ports, limits, a meshlb node's admin endpoints and the printed figures.
//
// Linux only: /proc, and children die with the bench (Pdeathsig).
package wsload

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// Dial opens one WebSocket to url from source address 127.0.0.(2 + k%253),
// so that no source address runs out of ephemeral ports. br is non-nil if
// the server sent bytes past its handshake.
func Dial(ctx context.Context, url string, k int) (net.Conn, *bufio.Reader, error) {
	src := net.IPv4(127, 0, 0, byte(2+k%253))
	d := ws.Dialer{
		Timeout: 10 * time.Second,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
			return nd.DialContext(ctx, network, addr)
		},
	}
	c, br, _, err := d.Dial(ctx, url)
	return c, br, err
}

// OpenMany dials n WebSockets (url(i) for the i-th), 32 at a time, and
// keeps only the net.Conn of each (no goroutine per idle socket). On error
// it stops dialling and returns those it opened.
func OpenMany(ctx context.Context, n int, url func(int) string) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, br, err := Dial(ctx, url(i), i)
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("websocket %d: %w", i, err); cancel() })
					return
				}
				if br != nil {
					ws.PutReader(br) // an idle echo sends nothing first
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	opened := slices.DeleteFunc(conns, func(c net.Conn) bool { return c == nil })
	return opened, firstErr
}

// CloseAll closes every connection.
func CloseAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// Conn is an open WebSocket and the reader of what its server sends.
type Conn struct {
	net.Conn
	R *bufio.Reader
}

// DialConns opens n WebSockets (url(i) for the i-th) one after the other.
// On error it closes those it opened.
func DialConns(ctx context.Context, n int, url func(int) string) ([]Conn, error) {
	out := make([]Conn, 0, n)
	for i := range n {
		c, br, err := Dial(ctx, url(i), i)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, fmt.Errorf("dial %d: %w", i, err)
		}
		if br == nil {
			br = bufio.NewReaderSize(c, 32<<10)
		}
		out = append(out, Conn{c, br})
	}
	return out, nil
}

// Echo is echo load on a set of WebSockets: each keeps inflight copies of
// one random binary message in flight, and every echo is checked.
type Echo struct {
	conns      []Conn
	count, bad atomic.Int64
	firstErr   atomic.Value
	done       chan struct{}
	wg         sync.WaitGroup
}

// StartEcho starts the load on conns with messages of size bytes. The
// connections are Echo's from then on: Stop closes them.
func StartEcho(conns []Conn, inflight, size int) *Echo {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(rand.IntN(256))
	}
	// One masked frame, written again and again: the client's work is the
	// same on every path and small.
	frame := ws.MustCompileFrame(ws.MaskFrameWith(ws.NewBinaryFrame(payload), ws.NewMask()))
	e := &Echo{conns: conns, done: make(chan struct{})}
	for _, c := range conns {
		tokens := make(chan struct{}, inflight)
		for range inflight {
			tokens <- struct{}{}
		}
		e.wg.Go(func() { // writer
			for {
				select {
				case <-e.done:
					return
				case <-tokens:
				}
				if _, err := c.Write(frame); err != nil {
					e.fail(fmt.Errorf("write: %w", err))
					return
				}
			}
		})
		e.wg.Go(func() { // reader
			buf := make([]byte, size)
			for {
				h, err := ws.ReadHeader(c.R)
				if err == nil {
					if h.OpCode != ws.OpBinary || h.Length != int64(size) || h.Masked {
						e.bad.Add(1)
						_, err = io.CopyN(io.Discard, c.R, h.Length)
					} else if _, err = io.ReadFull(c.R, buf); err == nil && !bytes.Equal(buf, payload) {
						e.bad.Add(1)
					}
				}
				if err != nil {
					e.fail(fmt.Errorf("read: %w", err))
					return
				}
				e.count.Add(1)
				tokens <- struct{}{}
			}
		})
	}
	return e
}

// fail records the first error of a connection, unless Stop closed it.
func (e *Echo) fail(err error) {
	select {
	case <-e.done:
	default:
		e.firstErr.CompareAndSwap(nil, err)
	}
}

// Count is the number of messages echoed so far.
func (e *Echo) Count() int64 { return e.count.Load() }

// Stop ends the load, closes the connections and waits for their
// goroutines. It returns how many messages came back wrong and the first
// error a connection met before Stop.
func (e *Echo) Stop() (bad int64, err error) {
	close(e.done)
	for _, c := range e.conns {
		c.Close()
	}
	e.wg.Wait()
	err, _ = e.firstErr.Load().(error)
	return e.bad.Load(), err
}

// Whoami opens a WebSocket to url (source address by k, as Dial) and asks
// the echo backend behind it its name n times; every answer must be the
// same.
func Whoami(ctx context.Context, url string, k, n int) (string, error) {
	c, br, err := Dial(ctx, url, k)
	if err != nil {
		return "", err
	}
	defer c.Close()
	var r io.Reader = c
	if br != nil {
		r = br
	}
	rw := struct {
		io.Reader
		io.Writer
	}{r, c}
	got := ""
	for range n {
		if err := wsutil.WriteClientText(c, []byte("whoami")); err != nil {
			return "", err
		}
		p, err := wsutil.ReadServerText(rw)
		if err != nil {
			return "", err
		}
		if got == "" {
			got = string(p)
		}
		if string(p) != got {
			return "", fmt.Errorf("one connection to %s reached %s and %s", url, got, p)
		}
	}
	return got, nil
}

// Sticky checks that session sid reaches one echo backend: conns
// WebSockets to each of addrs (host:port; the j-th to addrs[a] from source
// address by k(a, j), as Dial), each asking msgs times. It returns the
// backend's name.
func Sticky(ctx context.Context, sid string, addrs []string, conns, msgs int, k func(a, j int) int) (string, error) {
	got := ""
	for a, addr := range addrs {
		for j := range conns {
			p, err := Whoami(ctx, fmt.Sprintf("ws://%s/ws?session_id=%s", addr, sid), k(a, j), msgs)
			if err != nil {
				return "", err
			}
			if got == "" {
				got = p
			}
			if p != got {
				return "", fmt.Errorf("session %s reached %s and %s", sid, got, p)
			}
		}
	}
	return got, nil
}
