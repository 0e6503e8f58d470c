package node

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// net/http closes a connection whose request headers arrive too late
// without a word, and answers oversized headers with a 431 we never hear
// of. A user coming from HAProxy expects "timeout http-request" to answer
// 408 and both to leave a log line; guardListener adds that.

// guardListener wraps the proxy listener so that each connection can be
// watched while it sends its first request's headers.
type guardListener struct {
	net.Listener
	log zerolog.Logger // sampled: these are per-connection events
}

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &guardConn{Conn: c, log: l.log}, nil
}

// guardConn is one proxied connection under watch.
type guardConn struct {
	net.Conn
	log zerolog.Logger

	mu      sync.Mutex
	timer   *time.Timer
	settled bool // headers read, hijacked or closed: nothing to watch
}

// connState is the proxy server's ConnState hook. It runs on the accept
// goroutine for StateNew, so it must not block (nor call RemoteAddr, which
// may wait for a PROXY protocol header).
func connState(timeout time.Duration) func(net.Conn, http.ConnState) {
	return func(c net.Conn, s http.ConnState) {
		g, ok := c.(*guardConn)
		if !ok {
			return
		}
		switch s {
		case http.StateNew:
			g.mu.Lock()
			g.timer = time.AfterFunc(timeout, g.expire)
			g.mu.Unlock()
		case http.StateActive, http.StateHijacked, http.StateClosed:
			g.settle()
		}
	}
}

func (g *guardConn) settle() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.settled = true
	if g.timer != nil {
		g.timer.Stop()
	}
}

// expire answers 408 to a client that did not finish its request headers
// in time; the server's own header timeout is set later as a backstop.
func (g *guardConn) expire() {
	g.mu.Lock()
	if g.settled {
		g.mu.Unlock()
		return
	}
	g.settled = true
	g.mu.Unlock()
	g.Conn.SetWriteDeadline(time.Now().Add(time.Second))
	g.Conn.Write(response408)
	g.log.Warn().Str("remote_addr", g.Conn.RemoteAddr().String()).Msg("request headers timed out; answered 408")
	g.Conn.Close()
}

var (
	status431   = []byte("HTTP/1.1 431 ")
	response408 = func() []byte {
		body := `{"error": "request headers not received in time"}` + "\n"
		return []byte(fmt.Sprintf("HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	}()
)

func (g *guardConn) Write(p []byte) (int, error) {
	// Only the server's own error path writes a 431; hijacked WebSockets
	// skip the check (settled, and never starting with a status line).
	if bytes.HasPrefix(p, status431) {
		g.log.Warn().Str("remote_addr", g.Conn.RemoteAddr().String()).Msg("request headers too large; answered 431")
	}
	return g.Conn.Write(p)
}

// CloseWrite keeps half-close working through the wrapper.
func (g *guardConn) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
