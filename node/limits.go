package node

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// net/http closes a connection whose request headers arrive too late
// without a word, and answers oversized headers with a 431 we never hear
// of. A user coming from HAProxy expects "timeout http-request" to answer
// 408 and both to leave a log line; guardConn adds that, on the
// server's own read path so that nothing else writes to the connection
// at the same time (for a head the acceptor in accept.go read, it does the
// same). The acceptor wraps each connection it
// hands to net/http in one.

// guardConn is one proxied connection.
type guardConn struct {
	net.Conn
	log zerolog.Logger

	got      atomic.Bool // a byte of the first request arrived
	settled  atomic.Bool // the first request's headers were read
	hijacked atomic.Bool // a WebSocket: the bytes are no longer HTTP

	// headDeadline, if set, is when the first request's headers are due:
	// the acceptor started the clock before it handed the connection
	// over, and net/http must not restart it.
	headDeadline time.Time
}

// SetReadDeadline keeps the head deadline until the first request's
// headers are in.
func (g *guardConn) SetReadDeadline(t time.Time) error {
	if !g.headDeadline.IsZero() && !g.settled.Load() && (t.IsZero() || t.After(g.headDeadline)) {
		t = g.headDeadline
	}
	return g.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline's counterpart for both directions.
func (g *guardConn) SetDeadline(t time.Time) error {
	if err := g.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return g.SetReadDeadline(t)
}

var (
	// response431 is exactly what net/http writes for oversized headers.
	response431 = []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large")
	response408 = func() []byte {
		body := `{"error": "request headers not received in time"}` + "\n"
		return fmt.Appendf(nil, "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}()
)

// connState is the proxy server's ConnState hook. It runs on the accept
// goroutine for StateNew, so it must not block; it does nothing then.
func connState(c net.Conn, s http.ConnState) {
	g, ok := c.(*guardConn)
	if !ok {
		return
	}
	switch s {
	case http.StateActive, http.StateIdle, http.StateClosed:
		g.settled.Store(true)
	case http.StateHijacked:
		g.settled.Store(true)
		g.hijacked.Store(true)
	}
}

// NetConn returns the wrapped conn. The router relays a hijacked
// WebSocket on the socket itself, where nothing of guardConn applies any
// more.
func (g *guardConn) NetConn() net.Conn { return g.Conn }

// Read answers 408 when the server's header deadline expires on a client
// that started a request and did not finish its headers. A connection that
// sent nothing (a browser's preconnect) is closed silently, as HAProxy's
// http-ignore-probes does.
func (g *guardConn) Read(p []byte) (int, error) {
	n, err := g.Conn.Read(p)
	if n > 0 {
		g.got.Store(true)
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && g.got.Load() && !g.settled.Swap(true) {
		g.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		g.Conn.Write(response408)
		g.log.Warn().Str("remote_addr", g.Conn.RemoteAddr().String()).Msg("request headers timed out; answered 408")
	}
	return n, err
}

func (g *guardConn) Write(p []byte) (int, error) {
	if !g.hijacked.Load() && len(p) == len(response431) && string(p) == string(response431) {
		g.log.Warn().Str("remote_addr", g.Conn.RemoteAddr().String()).Msg("request headers too large; answered 431")
	}
	return g.Conn.Write(p)
}

// CloseWrite keeps half-close working through the wrapper; it fails where
// the connection underneath can't half-close, so the caller closes it.
func (g *guardConn) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
