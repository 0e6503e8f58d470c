package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Close codes the router sends to clients.
const (
	// CloseGoingAway (1001) closes an idle WebSocket, and a drained one
	// when Drain is given it.
	CloseGoingAway uint16 = 1001
	// CloseServiceRestart (1012) is the other code Drain accepts: the
	// service restarts, reconnect (RFC 6455 registry).
	CloseServiceRestart uint16 = 1012
	// CloseBadGateway (1014) tells a client that the backend connection
	// was lost: the WebSocket counterpart of HTTP 502 in the IANA
	// registry. It is distinct from the drain codes, so a client can tell
	// "this node goes away" from "your backend went away"; both mean
	// reconnect.
	CloseBadGateway uint16 = 1014
	// CloseProtocolError (1002) answers a client frame that breaks RFC
	// 6455: an unmasked one (5.1), or a 64-bit length with the high bit
	// set.
	CloseProtocolError uint16 = 1002
	// CloseWriteTimeout (1008, Policy Violation) tells a client that its
	// backend took no byte for Config.WSWriteTimeout.
	CloseWriteTimeout uint16 = 1008
	// CloseMessageTooBig (1009) answers a client frame whose payload is
	// over Config.WSMaxFrameSize.
	CloseMessageTooBig uint16 = 1009
)

const (
	relayBufSize   = 32 << 10 // one pooled buffer per direction
	maxRelayedBody = 64 << 10 // body of a non-101 backend answer passed on
	// maxAnswerHeader bounds a backend's handshake status line and headers.
	maxAnswerHeader = 64 << 10
)

var relayBufPool = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

// pingFrame is the keepalive ping sent to clients.
var pingFrame = ws.MustCompileFrame(ws.NewPingFrame(nil))

// hostCleaner drops line breaks from a Host forwarded in a handshake. It
// is built once: a Replacer per request was a fifth of a handshake's
// allocated bytes.
var hostCleaner = strings.NewReplacer("\r", "", "\n", "")

// handshakeReaders holds the readers of backends' handshake answers; a
// session relayed on epoll gives its reader back once the bytes it
// buffered are passed on.
var handshakeReaders = sync.Pool{New: func() any { return bufio.NewReader(nil) }}

// headBuffers hold the handshake sent to a backend, then the answer head
// written to the client: a few hundred bytes each, built per handshake.
var headBuffers = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, 1024)) }}

func putHeadBuffer(b *bytes.Buffer) {
	if b.Cap() <= 16<<10 { // a huge head is not kept for the next one
		headBuffers.Put(b)
	}
}

// hopHeaders are removed from a forwarded handshake and from a relayed
// non-101 answer (RFC 9110 7.6.1, plus the legacy ones).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// IsWebSocketUpgrade reports whether req asks to switch to websocket:
// what makes ServeHTTP take it as a WebSocket.
func IsWebSocketUpgrade(req *http.Request) bool {
	return headerHasToken(req.Header, "Connection", "upgrade") &&
		headerHasToken(req.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// removeHopHeaders deletes hop-by-hop headers, including those the
// Connection header names.
func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				h.Del(t)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// serveWebSocket performs the handshake with the first candidate that
// answers, then hijacks the client connection and relays until both sides
// are done. It returns when the session has ended.
func (rt *Router) serveWebSocket(w http.ResponseWriter, req *http.Request, pool, key, source string, cookie *http.Cookie, slot netip.Addr) (detached bool) {
	hs := handshakeReport{rt: rt, start: time.Now()}
	// Whatever return comes before the 101 is a failed handshake; one after
	// it has reported already.
	defer hs.done("", HandshakeError)
	if rt.isDraining() {
		rt.writeError(w, req, errDraining)
		return false
	}
	pin := rt.affinityOf(req, pool)
	cands, err := rt.pick(pool, key)
	if err != nil {
		rt.writeError(w, req, err)
		return false
	}
	cands = pinned(pin, cands, 1+rt.cfg.Retries)
	buf := headBuffers.Get().(*bytes.Buffer)
	defer putHeadBuffer(buf)
	handshake, err := rt.buildHandshake(buf, req)
	if err != nil {
		rt.writeError(w, req, err)
		return false
	}

	ctx, cancel := context.WithTimeout(req.Context(), rt.tunables().HandshakeTimeout)
	defer cancel()
	var (
		b       Backend
		conn    net.Conn
		br      *bufio.Reader
		res     *http.Response
		lastErr error
	)
	failovers := 0
	for i, cand := range cands {
		conn, br, res, err = rt.dialHandshake(ctx, cand, handshake)
		if err == nil {
			b = cand
			failovers = i
			break
		}
		if req.Context().Err() != nil {
			rt.writeError(w, req, &clientGoneError{err})
			return false
		}
		timedOut := ctx.Err() != nil
		last := timedOut || i == len(cands)-1
		rt.failure(cand, err, !last)
		lastErr = err
		if timedOut {
			rt.writeError(w, req, context.DeadlineExceeded)
			return false
		}
	}
	if conn == nil {
		rt.writeError(w, req, lastErr)
		return false
	}

	if res.StatusCode != http.StatusSwitchingProtocols && res.StatusCode >= 200 {
		hs.done(b.ID, HandshakeRejected)
		rt.relayAnswer(w, req, conn, res, cookie)
		return false
	}
	// An interim 1xx, or a 101 that is not the answer to our key: the
	// backend is broken (or not what it claims), which passive health
	// should hear of. The client gets 502; checkUpgrade made sure its key
	// is the single one we sent.
	if res.StatusCode != http.StatusSwitchingProtocols || !validSwitch(res.Header, req.Header.Get("Sec-WebSocket-Key")) {
		conn.Close()
		err := fmt.Errorf("%w: backend answered %q", errBadSwitch, res.Status)
		rt.failure(b, err, false)
		hs.done(b.ID, HandshakeError)
		rt.writeError(w, req, err)
		return false
	}

	c := &wsConn{
		rt:        rt,
		backendID: b.ID,
		backend:   conn,
		backendBr: br,
		wsem:      make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	c.obs = sessionObs{start: hs.start, remoteAddr: req.RemoteAddr, path: req.URL.Path,
		keySource: source, key: key, pool: pool, failovers: failovers}
	if rt.cfg.OnSessionEnd != nil {
		if a := rt.keys.ClientIP(req); a.IsValid() {
			c.obs.clientIP = a.String()
		}
	}
	if !rt.register(c) {
		conn.Close()
		rt.writeError(w, req, errDraining)
		return false
	}
	defer func() {
		if !detached {
			rt.wg.Done() // after the last log line: Close waits for it
		}
	}()

	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		conn.Close()
		c.finish()
		rt.writeError(w, req, fmt.Errorf("%w: %w", errHijack, err))
		return false
	}
	if !c.attach(client) {
		c.finish()
		return false
	}
	if n := brw.Reader.Buffered(); n > 0 {
		p, _ := brw.Reader.Peek(n)
		c.clientBuf = bytes.Clone(p)
	}

	// Pass the backend's 101 on as it is: the client's key went through
	// unchanged, so its Sec-WebSocket-Accept (checked above) is right,
	// and its chosen protocol and extensions (permessage-deflate end to
	// end) stand.
	head := buf // the handshake has gone
	head.Reset()
	head.WriteString("HTTP/1.1 ")
	head.WriteString(res.Status)
	head.WriteString("\r\n")
	if cookie != nil {
		res.Header.Add("Set-Cookie", cookie.String())
	}
	if ac := rt.affinityCookie(req, pin, b.ID); ac != nil {
		res.Header.Add("Set-Cookie", ac.String())
	}
	_ = res.Header.Write(head)
	head.WriteString("\r\n")
	_ = client.SetDeadline(time.Now().Add(rt.tunables().HandshakeTimeout))
	_, err = client.Write(head.Bytes())
	_ = client.SetDeadline(time.Time{})
	_ = conn.SetDeadline(time.Time{})
	if err != nil {
		c.hardClose()
		c.finish()
		rt.log.Debug().Err(err).Str("remote_addr", req.RemoteAddr).Msg("write upgrade response")
		return false
	}
	c.obs.relayed = true
	hs.done(b.ID, HandshakeOK)
	if rec, ok := w.(*requestRecorder); ok {
		rec.switched = true // reported as a session, at its end
	}

	rt.log.Debug().Uint64("ws", c.id).Str("backend", b.ID).Str("remote_addr", req.RemoteAddr).
		Msg("websocket connected")
	// Where the platform allows, the session leaves this goroutine and is
	// relayed on readiness; the handler returns and the session holds no
	// goroutine while idle.
	c.ipSlot = slot
	if rt.adopt(c) {
		return true
	}
	c.closeReq = make(chan uint16, 1)
	start := time.Now()
	c.run()
	rt.log.Debug().Uint64("ws", c.id).Str("backend", b.ID).Dur("duration", time.Since(start)).
		Int64("bytes_in", c.bytesIn.Load()).Int64("bytes_out", c.bytesOut.Load()).
		Msg("websocket closed")
	return false
}

// buildHandshake writes the request line and headers forwarded to a
// backend: the client's path, query and headers (key, version, protocol
// and extension offers, cookies, origin, credentials), minus hop-by-hop
// headers, plus Upgrade and X-Forwarded-*.
func (rt *Router) buildHandshake(buf *bytes.Buffer, req *http.Request) ([]byte, error) {
	uri := req.URL.RequestURI()
	for i := 0; i < len(uri); i++ {
		if uri[i] <= ' ' || uri[i] == 0x7f {
			return nil, errBadUpgrade
		}
	}
	h := req.Header.Clone()
	removeHopHeaders(h)
	h.Del("Content-Length")
	rt.setForwarded(req, h)
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")

	buf.Reset()
	buf.WriteString("GET ")
	buf.WriteString(uri)
	buf.WriteString(" HTTP/1.1\r\nHost: ")
	buf.WriteString(hostCleaner.Replace(req.Host))
	buf.WriteString("\r\n")
	if err := h.Write(buf); err != nil {
		return nil, err
	}
	buf.WriteString("\r\n")
	return buf.Bytes(), nil
}

// dialHandshake connects to b, sends the handshake and reads the answer.
// Any error means b did not give a complete answer.
func (rt *Router) dialHandshake(ctx context.Context, b Backend, handshake []byte) (net.Conn, *bufio.Reader, *http.Response, error) {
	dctx, cancel := context.WithTimeout(ctx, rt.tunables().DialTimeout)
	conn, err := rt.dial.DialContext(dctx, "tcp", b.Addr)
	cancel()
	if err != nil {
		return nil, nil, nil, &dialError{err}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// The client going away aborts the handshake at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if rt.btls != nil {
		if conn, err = rt.btls.client(ctx, conn, b.Addr); err != nil {
			return nil, nil, nil, err
		}
	}

	if _, err := conn.Write(handshake); err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("write handshake: %w", err)
	}
	// net/http reads status line and headers without a bound: cap them, so
	// a backend can't make the node buffer whatever it sends within the
	// handshake timeout. The cap is lifted once the answer is in.
	lr := &io.LimitedReader{R: conn, N: maxAnswerHeader}
	br := handshakeReaders.Get().(*bufio.Reader)
	br.Reset(lr)
	res, err := http.ReadResponse(br, nil)
	lr.N = math.MaxInt64
	if err != nil {
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
		return nil, nil, nil, fmt.Errorf("read handshake answer: %w", err)
	}
	if !stop() {
		// The context ended just now and may have spoiled the deadline.
		conn.Close()
		return nil, nil, nil, fmt.Errorf("read handshake answer: %w", ctx.Err())
	}
	return conn, br, res, nil
}

// relayAnswer passes a backend's non-101 answer to the client as it was:
// status, headers and body; a body over maxRelayedBody gets 502 rather than
// a cut that would look complete.
func (rt *Router) relayAnswer(w http.ResponseWriter, req *http.Request, conn net.Conn, res *http.Response, cookie *http.Cookie) {
	defer conn.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxRelayedBody+1))
	res.Body.Close()
	if err != nil || len(body) > maxRelayedBody {
		rt.writeError(w, req, fmt.Errorf("backend answered %q with a body that is unreadable or over %d bytes", res.Status, maxRelayedBody))
		return
	}
	h := w.Header()
	for k, v := range res.Header {
		h[k] = v
	}
	removeHopHeaders(h)
	h.Del("Content-Length")
	if cookie != nil {
		h.Add("Set-Cookie", cookie.String())
	}
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(body)
}

// wsConn is one proxied WebSocket: the client and backend connections and
// what the relay goroutines share.
type wsConn struct {
	rt        *Router
	ipSlot    netip.Addr // holds a per-client slot until finished, if valid (limits.go)
	id        uint64
	backendID string
	backend   net.Conn
	backendBr *bufio.Reader // may hold the first frames already
	clientBuf []byte        // bytes the client sent after its handshake

	mu     sync.RWMutex // guards client and closed (and, in epoll mode, the sockets' lifetime)
	client net.Conn
	closed bool

	// wsem is the write lock of the client connection, a channel so the
	// supervisor can give up on it. Whoever holds it writes whole frames
	// only, so a close frame can be injected at a frame boundary.
	wsem      chan struct{}
	closeSent bool // a close frame went to the client; guarded by wsem

	upFrames clientFrames // client → backend headers; owned by the up relay
	// clientClosed: a client close frame was noted; owned by the up relay.
	clientClosed bool
	// obs is what the session's end reports (traffic.go); closedBy and
	// closeCode are noted at its close frames and connection ends.
	obs        sessionObs
	closedBy   atomic.Uint32
	closeCode  atomic.Uint32
	closeReq   chan uint16 // Drain's request, buffered 1
	lastActive atomic.Int64
	bytesIn    atomic.Int64 // client → backend
	bytesOut   atomic.Int64 // backend → client
	done       chan struct{}

	pollState // epoll mode (Linux), see poll_linux.go
}

// attach sets the hijacked client connection. It reports false, closing
// both connections, if the router closed the session in the meantime.
func (c *wsConn) attach(client net.Conn) bool {
	_ = client.SetDeadline(time.Time{})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.client = client
	if c.closed {
		client.Close()
		c.backend.Close()
		return false
	}
	return true
}

// hardClose closes both connections now; it unblocks every relay.
func (c *wsConn) hardClose() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if c.polled {
		c.closeFDs()
		c.mu.Unlock()
		c.dropParked(true)
		c.dropParked(false)
		c.unref() // the session's own reference
		return
	}
	c.backend.Close()
	if c.client != nil {
		c.client.Close()
	}
	c.mu.Unlock()
}

// requestClose asks the session to close with code; it never blocks.
func (c *wsConn) requestClose(code uint16) {
	c.mu.RLock()
	polled := c.polled
	c.mu.RUnlock()
	if polled {
		c.requestClosePolled(code)
		return
	}
	select {
	case c.closeReq <- code:
	default:
	}
}

// finish removes c from the registry and marks it done.
func (c *wsConn) finish() {
	c.rt.mu.Lock()
	delete(c.rt.conns, c.id)
	c.endedLocked()
	c.rt.mu.Unlock()
	close(c.done)
	c.reportEnd()
}

func (c *wsConn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// relayEnd is what a relay goroutine reports when it stops.
type relayEnd struct {
	upstream bool // client → backend
	err      error
}

// run relays in both directions and supervises: keepalive pings, idle
// timeout, close requests, half-close lingering. It returns when both
// connections are closed and both relays have returned.
func (c *wsConn) run() {
	defer c.finish()
	defer c.hardClose()
	c.touch()

	ends := make(chan relayEnd, 2) // room for both senders
	go upstreamCopier{c}.run(ends)
	go frameRelay{c}.run(ends)

	var pingC, idleC, lingerC <-chan time.Time
	if d := c.rt.tunables().WSPingInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		pingC = t.C
	}
	var idle *time.Timer
	if d := c.rt.tunables().WSIdleTimeout; d > 0 {
		idle = time.NewTimer(d)
		defer idle.Stop()
		idleC = idle.C
	}
	var linger *time.Timer
	startLinger := func() {
		if linger == nil {
			linger = time.NewTimer(c.rt.closeTimeout)
			lingerC = linger.C
		}
	}
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()

	failed := false // once: the other relay then ends on the closed conns
	for pending := 2; pending > 0; {
		select {
		case e := <-ends:
			pending--
			if !failed && c.relayFailed(e) {
				failed = true
				c.hardClose()
				continue
			}
			c.noteEnd(e.upstream)
			if e.upstream {
				// The backend reads EOF and may still send its last frames.
				closeWrite(c.backend)
			} else {
				c.clientLost(e, pending == 1)
			}
			startLinger()
		case code := <-c.closeReq:
			c.inject(code, "node draining")
			startLinger()
		case <-pingC:
			c.ping()
		case <-idleC:
			since := time.Since(time.Unix(0, c.lastActive.Load()))
			d := c.rt.tunables().WSIdleTimeout
			if d <= 0 {
				break // turned off since (a reload)
			}
			if since < d {
				idle.Reset(d - since)
				break
			}
			c.inject(CloseGoingAway, "idle timeout")
			startLinger()
		case <-lingerC:
			c.hardClose()
		}
	}
}

// relayFailed handles, in goroutine mode, a relay that ended because the
// client broke the protocol or a peer took no byte for the write
// timeout, and reports whether the session must close now.
func (c *wsConn) relayFailed(e relayEnd) bool {
	var pe *protocolError
	switch {
	case e.upstream && errors.As(e.err, &pe):
		c.refuseClient(pe)
		return true
	case errors.Is(e.err, errWriteTimeout):
		peer := "client"
		if e.upstream {
			peer = "backend"
		}
		c.rt.wsWriteTimeouts.Add(1)
		c.rt.log.Debug().Uint64("ws", c.id).Str("backend", c.backendID).Str("peer", peer).
			Dur("timeout", c.rt.tunables().WSWriteTimeout).Msg("websocket write timeout")
		if e.upstream {
			c.inject(CloseWriteTimeout, "backend write timeout")
		}
		return true
	}
	return false
}

// refuseClient tells the client why its frame was refused, at a frame
// boundary; the caller closes the session.
func (c *wsConn) refuseClient(err error) {
	var pe *protocolError
	if !errors.As(err, &pe) {
		return
	}
	c.rt.clientFrameErrors.Add(1)
	c.rt.log.Debug().Uint64("ws", c.id).Str("backend", c.backendID).Uint16("code", pe.code).
		Str("reason", pe.reason).Msg("websocket client frame refused")
	c.inject(pe.code, pe.reason)
}

// errWriteTimeout is a relay write the peer took no byte of for
// Config.WSWriteTimeout.
var errWriteTimeout = errors.New("websocket write timeout")

// relayWrite writes p to conn in goroutine mode, giving it the write
// timeout: each write is of one relay buffer at most, so the deadline is
// renewed at least every relayBufSize bytes the peer takes.
func (c *wsConn) relayWrite(conn net.Conn, p []byte) error {
	if d := c.rt.tunables().WSWriteTimeout; d > 0 {
		_ = conn.SetWriteDeadline(time.Now().Add(d))
	}
	_, err := conn.Write(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", errWriteTimeout, err)
	}
	return err
}

// clientLost handles the end of the backend → client direction: unless a
// close frame already went to the client, or the client is gone, it tells
// the client with CloseBadGateway; then it half-closes the client side.
func (c *wsConn) clientLost(e relayEnd, clientOpen bool) {
	if clientOpen {
		c.inject(CloseBadGateway, "backend connection lost")
	}
	if e.err != nil && !errors.Is(e.err, io.EOF) {
		c.rt.log.Debug().Uint64("ws", c.id).Err(e.err).Msg("websocket backend read")
	}
	c.mu.Lock()
	client := c.client
	c.mu.Unlock()
	closeWrite(client)
}

// inject sends a close frame to the client at a frame boundary unless one
// was sent already. If the client connection cannot take it within the
// close timeout, the session is closed hard.
func (c *wsConn) inject(code uint16, reason string) {
	t := time.NewTimer(c.rt.closeTimeout)
	defer t.Stop()
	select {
	case c.wsem <- struct{}{}:
	case <-t.C:
		c.hardClose()
		return
	}
	defer func() { <-c.wsem }()
	if c.closeSent {
		return
	}
	c.closeSent = true
	frame, err := ws.CompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusCode(code), reason)))
	if err != nil {
		c.hardClose()
		return
	}
	// Noted before the write: the client's echo of this close can reach
	// the up relay before writeClient returns, and must not claim it.
	c.noteClose(closerNode, code)
	if err := c.writeClient(frame); err != nil {
		c.hardClose()
		return
	}
	c.rt.log.Debug().Uint64("ws", c.id).Str("backend", c.backendID).Uint16("code", code).Str("reason", reason).Msg("websocket close sent")
}

// ping sends a keepalive ping unless a frame is being written (traffic is
// flowing then) or the close handshake has begun.
func (c *wsConn) ping() {
	select {
	case c.wsem <- struct{}{}:
	default:
		return
	}
	defer func() { <-c.wsem }()
	if c.closeSent {
		return
	}
	if err := c.writeClient(pingFrame); err != nil {
		c.hardClose()
	}
}

// writeClient writes p to the client with the close timeout as deadline.
// The caller holds wsem.
func (c *wsConn) writeClient(p []byte) error {
	c.mu.RLock()
	client, polled := c.client, c.polled
	c.mu.RUnlock()
	if polled {
		return c.writeClientPolled(p)
	}
	_ = client.SetWriteDeadline(time.Now().Add(c.rt.closeTimeout))
	_, err := client.Write(p)
	_ = client.SetWriteDeadline(time.Time{})
	return err
}

// closeWrite half-closes conn, or closes it when it cannot half-close.
func closeWrite(conn net.Conn) {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		return
	}
	conn.Close()
}

// upstreamCopier copies client bytes to the backend as they come, the
// bytes already buffered at hijack first. Client frames are never altered;
// only their headers are checked (clientFrames).
type upstreamCopier struct{ c *wsConn }

func (u upstreamCopier) run(ends chan<- relayEnd) {
	ends <- relayEnd{upstream: true, err: u.copy()}
}

func (u upstreamCopier) copy() error {
	c := u.c
	limit := c.rt.tunables().WSMaxFrameSize
	if len(c.clientBuf) > 0 {
		if err := c.upFrames.check(c.clientBuf, limit); err != nil {
			return err
		}
		c.noteClientClose()
		c.bytesIn.Add(int64(len(c.clientBuf)))
		if err := c.relayWrite(c.backend, c.clientBuf); err != nil {
			return err
		}
		c.clientBuf = nil
	}
	bp := relayBufPool.Get().(*[]byte)
	defer relayBufPool.Put(bp)
	buf := *bp
	for {
		n, err := c.client.Read(buf)
		if n > 0 {
			c.touch()
			if err := c.upFrames.check(buf[:n], limit); err != nil {
				return err
			}
			c.noteClientClose()
			c.bytesIn.Add(int64(n))
			if werr := c.relayWrite(c.backend, buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

// frameRelay copies backend frames to the client one whole frame at a
// time, under the write lock, payload untouched (compressed frames keep
// RSV1). After a close frame went to the client it discards what the
// backend still sends: nothing may follow a close.
type frameRelay struct{ c *wsConn }

func (f frameRelay) run(ends chan<- relayEnd) {
	ends <- relayEnd{err: f.copy()}
}

func (f frameRelay) copy() error {
	c := f.c
	bp := relayBufPool.Get().(*[]byte)
	defer relayBufPool.Put(bp)
	buf := *bp
	hbuf := make([]byte, ws.MaxHeaderSize)
	br := c.backendBr
	for {
		h, err := ws.ReadHeaderBuffer(br, hbuf[:2])
		if err != nil {
			return err
		}
		c.touch()
		// A frame that fits the buffer is read whole before the write lock
		// is taken, so a backend trickling a payload holds up neither the
		// pings nor a drain's close frame.
		pw := prefixWriter{p: buf[:0]}
		if err := ws.WriteHeaderBuffer(&pw, h, hbuf); err != nil {
			return err
		}
		hl := len(pw.p)
		small := int64(hl)+h.Length <= int64(len(buf))
		n := hl
		if small {
			n += int(h.Length)
			if _, err := io.ReadFull(br, buf[hl:n]); err != nil {
				return err // nothing of this frame was written: the boundary holds
			}
		}
		c.wsem <- struct{}{}
		if c.closeSent {
			<-c.wsem
			if !small {
				if _, err := io.CopyN(io.Discard, br, h.Length); err != nil {
					return err
				}
			}
			continue
		}
		if h.OpCode == ws.OpClose {
			c.closeSent = true
			if small {
				var mask *[4]byte
				if h.Masked {
					mask = &h.Mask
				}
				c.noteClose(closerBackend, closeFrameCode(buf[hl:n], mask))
			}
		}
		if small {
			c.bytesOut.Add(int64(n))
			err = c.relayWrite(c.client, buf[:n])
		} else {
			err = f.stream(h, br, buf, hl)
		}
		<-c.wsem
		if err != nil {
			return err
		}
	}
}

// stream writes a frame larger than the buffer, whose encoded header is in
// buf[:hl], as its payload arrives. The caller holds wsem throughout: a
// drain that fires meanwhile waits for the frame's end (or closes hard at
// its deadline). If the frame breaks off, no close frame may follow it on
// the wire — it would land inside the payload — so the session is marked
// closed and ends without one.
func (f frameRelay) stream(h ws.Header, br *bufio.Reader, buf []byte, hl int) (err error) {
	c := f.c
	defer func() {
		if err != nil {
			c.closeSent = true
		}
	}()
	if err := c.relayWrite(c.client, buf[:hl]); err != nil {
		return err
	}
	c.bytesOut.Add(int64(hl))
	for left := h.Length; left > 0; {
		n, err := br.Read(buf[:min(left, int64(len(buf)))])
		if n > 0 {
			c.touch()
			c.bytesOut.Add(int64(n))
			if werr := c.relayWrite(c.client, buf[:n]); werr != nil {
				return werr
			}
			left -= int64(n)
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// prefixWriter appends to a slice; it encodes a frame header in place.
type prefixWriter struct{ p []byte }

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.p = append(w.p, b...)
	return len(b), nil
}

// register adds c to the registry unless the router drains or is closed.
// On true the caller owes c.finish() and rt.wg.Done().
func (rt *Router) register(c *wsConn) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.draining || rt.closed {
		return false
	}
	rt.nextID++
	c.id = rt.nextID
	rt.conns[c.id] = c
	rt.trafficOf(c.backendID).sessions.Add(1)
	rt.wg.Add(1)
	return true
}

func (rt *Router) isDraining() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.draining || rt.closed
}

// WSWriteTimeouts returns how many WebSockets were closed because a peer
// took no byte for Config.WSWriteTimeout.
func (rt *Router) WSWriteTimeouts() int64 { return rt.wsWriteTimeouts.Load() }

// WSClientFrameErrors returns how many WebSockets were closed for a client
// frame that was unmasked, malformed or over Config.WSMaxFrameSize.
func (rt *Router) WSClientFrameErrors() int64 { return rt.clientFrameErrors.Load() }

// ActiveWebSockets returns the number of proxied WebSockets.
func (rt *Router) ActiveWebSockets() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.conns)
}
