// Package demo owns what meshlb ships to show itself: the echo backend
// (`meshlb echo`) that answers with its own name, so a person or a test can
// see which backend a session reached.
package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/gobwas/ws/wsutil"
	"github.com/rs/zerolog"
)

// maxMessage bounds what the echo backend reads per message; it is a demo,
// not a sink for arbitrary uploads.
const maxMessage = 1 << 20

// Echo is a demo backend: WebSocket echo on any path (the text message
// "whoami" is answered with its ID), plain HTTP GET answered with its ID,
// and /status/NNN answered with status NNN.
// permessage-deflate is supported (without context takeover).
type Echo struct {
	ID     string
	Logger zerolog.Logger

	srv    *http.Server
	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool // Shutdown began: an upgrade finishing now is closed at once
	wg     sync.WaitGroup
}

// Start listens on addr ("host:port", port 0 for any) and serves until
// Shutdown.
func (e *Echo) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("echo listen on %s: %w", addr, err)
	}
	e.ln = ln
	e.conns = make(map[net.Conn]struct{})
	e.srv = &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second}
	e.wg.Go(func() {
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.Logger.Error().Err(err).Msg("echo server stopped")
		}
	})
	return nil
}

// Addr is the bound address.
func (e *Echo) Addr() string { return e.ln.Addr().String() }

// Shutdown stops accepting, closes every WebSocket (as a crashed backend
// would look to a proxy: no close frame) and waits for the handlers.
func (e *Echo) Shutdown(ctx context.Context) error {
	err := e.srv.Shutdown(ctx)
	e.mu.Lock()
	e.closed = true
	for c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	return err
}

func (e *Echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /status/NNN answers NNN, WebSocket upgrade or not: a backend that
	// refuses (401, 403, 500 ...) for a proxy's pass-through tests.
	if code, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
		if n, err := strconv.Atoi(code); err == nil && n >= 200 && n <= 599 {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Backend", e.ID)
			w.WriteHeader(n)
			fmt.Fprintf(w, "{\"backend\": %q, \"status\": %d}\n", e.ID, n)
			return
		}
	}
	if !isUpgrade(r) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Backend", e.ID)
		fmt.Fprintln(w, e.ID)
		return
	}
	ext := wsflate.Extension{Parameters: wsflate.DefaultParameters}
	u := ws.HTTPUpgrader{
		Negotiate: ext.Negotiate,
		Header:    http.Header{"X-Backend": []string{e.ID}},
		// The first offered subprotocol is as good as any: an echo speaks them all.
		Protocol: func(string) bool { return true },
	}
	conn, _, _, err := u.Upgrade(r, w)
	if err != nil {
		e.Logger.Debug().Err(err).Msg("echo upgrade failed")
		return
	}
	_, compress := ext.Accepted()
	// Hijacked connections are out of srv.Shutdown's sight: register and
	// start under the lock Shutdown takes, so none slips past it.
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		conn.Close()
		return
	}
	e.conns[conn] = struct{}{}
	e.wg.Go(func() {
		defer func() {
			e.mu.Lock()
			delete(e.conns, conn)
			e.mu.Unlock()
			conn.Close()
		}()
		if err := e.echo(conn, compress); !errors.Is(err, io.EOF) {
			e.Logger.Debug().Err(err).Msg("echo connection ended")
		}
	})
}

func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && headerHas(r.Header, "Connection", "upgrade") && headerHas(r.Header, "Upgrade", "websocket")
}

func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range bytes.Split([]byte(v), []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(t), []byte(token)) {
				return true
			}
		}
	}
	return false
}

// echo answers one connection's messages until it fails or closes; it
// always returns the error that ended it.
func (e *Echo) echo(conn net.Conn, compress bool) error {
	var state wsflate.MessageState
	rd := &wsutil.Reader{
		Source:         conn,
		State:          ws.StateServerSide | ws.StateExtended,
		MaxMessageSize: maxMessage,
		Extensions:     []wsutil.RecvExtension{&state},
		OnIntermediate: wsutil.ControlFrameHandler(conn, ws.StateServerSide),
	}
	ctl := wsutil.ControlFrameHandler(conn, ws.StateServerSide)
	for {
		hdr, err := rd.NextFrame()
		if err != nil {
			return err
		}
		if hdr.OpCode.IsControl() {
			if err := ctl(hdr, rd); err != nil {
				return err // a close frame ends up here as wsutil.ClosedError
			}
			continue
		}
		payload, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		if state.IsCompressed() {
			out := &boundedBuffer{max: maxMessage}
			if err := wsflate.DefaultHelper.DecompressTo(out, payload); err != nil {
				return err
			}
			payload = out.Bytes()
		}
		op := hdr.OpCode
		if op == ws.OpText && !utf8.Valid(payload) {
			// Checked after inflating: the reader would check compressed bytes.
			ws.WriteFrame(conn, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusInvalidFramePayloadData, "invalid utf-8")))
			return errors.New("text message is not utf-8")
		}
		if op == ws.OpText && string(payload) == "whoami" {
			payload = []byte(e.ID)
		}
		frame := ws.NewFrame(op, true, payload)
		if compress && state.IsCompressed() {
			if frame, err = wsflate.CompressFrame(frame); err != nil {
				return err
			}
		}
		if err := ws.WriteFrame(conn, frame); err != nil {
			return err
		}
	}
}

// boundedBuffer refuses to grow past max, so a small compressed message
// can't inflate into gigabytes.
type boundedBuffer struct {
	bytes.Buffer
	max int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, fmt.Errorf("message inflates past %d bytes", b.max)
	}
	return b.Buffer.Write(p)
}
