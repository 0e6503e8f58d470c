package node

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/parkpool"
	"github.com/meshlb/meshlb/router"
)

// The proxy listener takes WebSocket upgrades before net/http sees them.
// net/http gives every connection its own 4 KiB reader and writer, which a
// hijack never returns to its pools, a cancellable context, a background
// read that the hijack must abort with a deadline, and a goroutine per
// connection that outlives the handshake: per handshake that was most of
// the bytes allocated and a good part of the time. Here a pooled reader
// takes the request head; an upgrade is parsed by net/http's own parser
// (http.ReadRequest), so routing keys, Host and header rules are the same
// code on both paths, and served by the same Router.ServeHTTP with a
// minimal ResponseWriter that can hijack. Anything else, and anything
// unusual about an upgrade, goes to net/http with the bytes read so far.

// headBufSize is the pooled reader of request heads. A WebSocket upgrade
// head is a few hundred bytes; one that does not fit goes to net/http,
// whose own limit (MaxHeaderBytes plus 4 KiB) is never below this.
const headBufSize = 4096

var headReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, headBufSize) }}

// headParser re-reads a peeked head for http.ReadRequest, so that a head
// net/http should see instead is still whole in the connection's reader.
type headParser struct {
	src bytes.Reader
	br  *bufio.Reader
}

var headParsers = sync.Pool{New: func() any {
	p := &headParser{}
	p.br = bufio.NewReaderSize(&p.src, headBufSize)
	return p
}}

// aLongTimeAgo is a deadline that makes a blocked read return at once.
var aLongTimeAgo = time.Unix(1, 0)

// acceptor owns the proxy listener. It is the net.Listener net/http
// serves: Accept returns the connections that are not WebSocket upgrades
// taken here, each wrapped in a guardConn.
type acceptor struct {
	ln      net.Listener
	handler http.Handler
	timeout time.Duration  // request head timeout; 408 once a byte came
	log     zerolog.Logger // sampled: these are per-connection events
	// prepare, if set, runs first on each connection, under the head
	// deadline, and returns the connection to read from: the TLS
	// listener's handshake (tls.go). false means it closed c.
	prepare func(c net.Conn, deadline time.Time) (net.Conn, bool)

	handoff   chan net.Conn
	servers   *parkpool.Pool[net.Conn] // parked server goroutines
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex
	reading map[net.Conn]struct{} // connections whose head is being read
	wg      sync.WaitGroup        // one per server goroutine
}

func newAcceptor(ln net.Listener, h http.Handler, timeout time.Duration, log zerolog.Logger) *acceptor {
	return &acceptor{
		ln:      ln,
		handler: h,
		timeout: timeout,
		log:     log,
		handoff: make(chan net.Conn),
		servers: parkpool.New[net.Conn](maxIdleServers),
		done:    make(chan struct{}),
		reading: make(map[net.Conn]struct{}),
	}
}

// Accept returns the next connection for net/http.
func (a *acceptor) Accept() (net.Conn, error) {
	select {
	case c := <-a.handoff:
		return c, nil
	case <-a.done:
		return nil, net.ErrClosed
	}
}

// Close closes the listener and aborts heads being read, as net/http's
// Shutdown closes connections that have not sent a request yet. It is
// safe to call more than once. Upgrades already being served go on: the
// router drains them.
func (a *acceptor) Close() error {
	a.closeOnce.Do(func() {
		close(a.done)
		a.closeErr = a.ln.Close()
		a.mu.Lock()
		for c := range a.reading {
			_ = c.SetReadDeadline(aLongTimeAgo)
		}
		a.mu.Unlock()
	})
	return a.closeErr
}

func (a *acceptor) Addr() net.Addr { return a.ln.Addr() }

// run accepts until the listener closes, then waits for every connection
// it serves itself.
func (a *acceptor) run() {
	defer a.wg.Wait()
	a.wg.Go(func() { a.servers.Run(a.done) })
	var backoff time.Duration
	for {
		c, err := a.ln.Accept()
		if err != nil {
			select {
			case <-a.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// The node's listener is a reserveListener, which answers
			// descriptor exhaustion with 503 and sums up its own errors
			// (fdreserve.go); an error that still reaches here is rare
			// (a wrapper's), and backs off as net/http does rather than
			// spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			a.log.Warn().Err(err).Dur("retry_in", backoff).Msg("proxy accept failed")
			select {
			case <-time.After(backoff):
				continue
			case <-a.done:
				return
			}
		}
		backoff = 0
		if !a.servers.Offer(c) {
			a.wg.Go(func() { a.server(c) })
		}
	}
}

// maxIdleServers bounds the goroutines kept parked for the next
// connection; those a trim period does not need exit too, so that a
// reconnect storm does not leave its goroutines parked for good.
const maxIdleServers = 128

// server serves c, then waits for the next connection. A goroutine's
// stack grows to what a handshake needs (parsing, dialling) on its first
// one; a new goroutine per connection paid that growth every time, about
// a twentieth of a handshake's CPU.
func (a *acceptor) server(c net.Conn) {
	for ok := true; ok; c, ok = a.servers.Park(a.done) {
		a.serveConn(c)
	}
}

// serveConn reads c's request head and serves it here if it is a
// WebSocket upgrade, or hands c to net/http.
func (a *acceptor) serveConn(c net.Conn) {
	a.mu.Lock()
	select {
	case <-a.done:
		a.mu.Unlock()
		c.Close()
		return
	default:
	}
	a.reading[c] = struct{}{}
	a.mu.Unlock()
	deadline := time.Now().Add(a.timeout)
	_ = c.SetReadDeadline(deadline)
	raw := c // what Close aborts by its deadline
	if a.prepare != nil {
		var ok bool
		if c, ok = a.prepare(c, deadline); !ok {
			a.mu.Lock()
			delete(a.reading, raw)
			a.mu.Unlock()
			return
		}
	}
	br := headReaders.Get().(*bufio.Reader)
	br.Reset(c)
	n, err := readHead(br)
	a.mu.Lock()
	delete(a.reading, raw)
	a.mu.Unlock()

	var req *http.Request
	switch {
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		a.timedOut(c, br.Buffered() > 0)
		a.release(br)
		return
	case err == nil && n > 0 && hasLengthAndChunked(peek(br, n)):
		a.refuseFraming(c)
		a.release(br)
		return
	case err == nil && n > 0 && couldBeGet(peek(br, n)):
		req = parseUpgrade(peek(br, n))
	}
	if req == nil {
		// Not an upgrade, or nothing this path handles: net/http reads
		// on, with its own limits, from where this left off.
		a.handOff(c, br, deadline)
		return
	}
	_, _ = br.Discard(n)
	_ = c.SetReadDeadline(time.Time{})
	req.RemoteAddr = c.RemoteAddr().String()
	if tc, ok := c.(*tls.Conn); ok {
		st := tc.ConnectionState()
		req.TLS = &st
	}
	w := &upgradeWriter{conn: c, br: br}
	a.handler.ServeHTTP(w, req)
	if !w.hijacked {
		w.finish()
		c.Close()
	}
	// After a hijack the router has copied what br still held.
	a.release(br)
}

func (a *acceptor) release(br *bufio.Reader) {
	br.Reset(nil)
	headReaders.Put(br)
}

// timedOut answers a head that did not arrive in time as guardConn does:
// 408 and a warning if the client sent anything, a bare close if not.
func (a *acceptor) timedOut(c net.Conn, got bool) {
	select {
	case <-a.done: // aborted by Close, not by the client
		c.Close()
		return
	default:
	}
	if got {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(response408)
		a.log.Warn().Str("remote_addr", c.RemoteAddr().String()).Msg("request headers timed out; answered 408")
	}
	c.Close()
}

// handOff gives c to net/http, the bytes br holds first. Until net/http
// has read the first request's headers, the head deadline set here
// stands: net/http setting its own must not restart the clock.
func (a *acceptor) handOff(c net.Conn, br *bufio.Reader, deadline time.Time) {
	var pre []byte
	if k := br.Buffered(); k > 0 {
		pre = bytes.Clone(peek(br, k))
	}
	a.release(br)
	g := &guardConn{Conn: &prefixConn{Conn: c, pre: pre}, log: a.log, headDeadline: deadline}
	g.got.Store(len(pre) > 0)
	select {
	case a.handoff <- g:
	case <-a.done:
		c.Close()
	}
}

func peek(br *bufio.Reader, n int) []byte {
	p, _ := br.Peek(n)
	return p
}

// readHead reads until br holds a whole request head and returns its
// length. It returns 0 and no error, early, when the head is not one this
// path looks at (it does not start with an upper-case method, or is
// larger than the reader), and the read error, if any, otherwise. Nothing is consumed.
// Heads of every method are read, not only upgrades', so that the first
// request of every connection has its framing checked.
func readHead(br *bufio.Reader) (int, error) {
	for {
		p := peek(br, br.Buffered())
		if len(p) > 0 {
			if p[0] < 'A' || p[0] > 'Z' {
				// Not a method (TLS, garbage, the empty lines RFC 9112
				// 2.2 lets a server skip): net/http's business, now.
				return 0, nil
			}
			if n := headLen(p); n > 0 {
				return n, nil
			}
			if len(p) == br.Size() {
				return 0, nil
			}
		}
		if _, err := br.Peek(len(p) + 1); err != nil {
			return 0, err
		}
	}
}

// couldBeGet reports whether p starts like a GET request line. Anything
// else goes to net/http, including the empty lines it skips before a
// request line (RFC 9112 2.2).
func couldBeGet(p []byte) bool {
	const get = "GET "
	if len(p) > len(get) {
		p = p[:len(get)]
	}
	return string(p) == get[:len(p)]
}

// hasLengthAndChunked reports whether head, a whole request head, frames
// its body ambiguously: both a Content-Length and a Transfer-Encoding
// field, or a Transfer-Encoding in an HTTP/1.0 request (which net/http
// ignores, while a proxy in front may not; RFC 9112 6.1 says to treat it
// as faulty framing, NGINX answers 400). net/http serves
// such a request by Transfer-Encoding and deletes Content-Length before a
// handler could see it; a front proxy that framed it by Content-Length
// would then have smuggled the rest of the body in as a second request.
// RFC 9112 6.1 lets a server refuse it and says to close the connection
// either way; NGINX answers 400, and so does refuseFraming. Field names
// are matched as textproto reads them: a line's name up to its colon,
// without case; continuation lines (starting with a space or tab) are no
// fields.
func hasLengthAndChunked(head []byte) bool {
	var cl, te, http10 bool
	first := true
	for line := range bytes.Lines(head) {
		if first { // the request line
			first = false
			http10 = bytes.HasSuffix(bytes.TrimRight(line, "\r\n"), []byte(" HTTP/1.0"))
			continue
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break // the end of the head
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			continue
		}
		switch name := line[:i]; {
		case bytes.EqualFold(name, []byte("Content-Length")):
			cl = true
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			te = true
		}
	}
	return te && (cl || http10)
}

// responseFraming answers a request with both Content-Length and
// Transfer-Encoding.
var responseFraming = func() []byte {
	body := `{"error": "request body framing is ambiguous: Transfer-Encoding with Content-Length, or in HTTP/1.0"}` + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

// refuseFraming answers 400 and closes c: after an ambiguous body nothing
// more on the connection can be trusted to be a request.
func (a *acceptor) refuseFraming(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(responseFraming)
	a.log.Warn().Str("remote_addr", c.RemoteAddr().String()).Msg("request body framing is ambiguous; answered 400")
	lingerClose(c)
}

// lingerClose half-closes c and reads (a bounded amount, for a bounded
// time) before closing, as net/http does after an error answer: closing
// with unread bytes sends a reset, which can destroy the answer before
// the client has read it.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 256<<10))
	}
	c.Close()
}

// headLen returns the length of the request head at the start of p, up to
// and including the empty line that ends it, or 0 if p holds no end yet.
// Lines end in LF, with or without CR, as textproto reads them.
func headLen(p []byte) int {
	for i := 0; i < len(p); {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			return 0
		}
		line := p[i : i+j]
		i += j + 1
		if len(line) == 0 || (len(line) == 1 && line[0] == '\r') {
			if i == len(line)+1 {
				return 0 // an empty first line: net/http's business
			}
			return i
		}
	}
	return 0
}

// parseUpgrade parses head, a whole request head, and returns the request
// if it is a plain WebSocket upgrade this path serves exactly as net/http
// would: HTTP/1.1, one valid Host, no body. Anything else returns nil and
// goes to net/http, which also answers malformed requests its own way.
func parseUpgrade(head []byte) *http.Request {
	p := headParsers.Get().(*headParser)
	defer headParsers.Put(p)
	p.src.Reset(head)
	p.br.Reset(&p.src)
	req, err := http.ReadRequest(p.br)
	if err != nil || p.br.Buffered() > 0 || p.src.Len() > 0 {
		return nil
	}
	if req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.Method != http.MethodGet ||
		req.ContentLength != 0 || len(req.TransferEncoding) > 0 || !router.IsWebSocketUpgrade(req) {
		return nil
	}
	// http.ReadRequest has moved Host into req.Host; net/http's server
	// also wants it present and valid, and every header name and value
	// valid. The checks here are stricter; what fails them goes to it.
	// An absolute-form target is left to it too: there req.Host comes
	// from the target and a missing Host header could not be told.
	if req.URL.Host != "" || !plainHost(req.Host) || !validHeader(req.Header) {
		return nil
	}
	return req
}

// validHeader reports whether every name is a token and no value holds a
// control byte other than tab, as net/http's server requires.
func validHeader(h http.Header) bool {
	for k, vv := range h {
		if k == "" {
			return false
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
				return false
			}
		}
		for _, v := range vv {
			for i := 0; i < len(v); i++ {
				if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
					return false
				}
			}
		}
	}
	return true
}

// plainHost accepts a host[:port] made only of the bytes a host name, an
// IPv4 or a bracketed IPv6 address uses: a strict subset of what net/http
// allows, so that anything it might treat differently goes to it.
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']':
		default:
			return false
		}
	}
	return true
}

// upgradeWriter is the ResponseWriter of an upgrade served by the
// acceptor. The router either hijacks the connection or answers with an
// error or a backend's non-101 answer, which is buffered and written with
// its length once the handler returns; the connection is then closed.
type upgradeWriter struct {
	conn     net.Conn
	br       *bufio.Reader
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
}

var _ http.Hijacker = (*upgradeWriter)(nil)

func (w *upgradeWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *upgradeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *upgradeWriter) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Hijack hands over the connection. The router only reads what the
// reader still buffers; the writer is a small one for form's sake.
func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	w.hijacked = true
	return w.conn, bufio.NewReadWriter(w.br, bufio.NewWriterSize(w.conn, 64)), nil
}

// finish writes the buffered answer.
func (w *upgradeWriter) finish() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	h := w.Header()
	h.Del("Transfer-Encoding")
	h.Set("Content-Length", strconv.Itoa(w.body.Len()))
	h.Set("Connection", "close")
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	var out bytes.Buffer
	out.WriteString("HTTP/1.1 ")
	out.WriteString(strconv.Itoa(w.status))
	out.WriteByte(' ')
	out.WriteString(http.StatusText(w.status))
	out.WriteString("\r\n")
	_ = h.Write(&out)
	out.WriteString("\r\n")
	out.Write(w.body.Bytes())
	_ = w.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = w.conn.Write(out.Bytes())
}

// prefixConn reads pre before the connection: the bytes the acceptor
// read before it handed the connection to net/http.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		if len(c.pre) == 0 {
			c.pre = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the connection underneath once pre is read, so that
// the router can relay a WebSocket on the socket; before that it returns
// c itself, and the router relays through the wrapper.
func (c *prefixConn) NetConn() net.Conn {
	if len(c.pre) > 0 {
		return c
	}
	return c.Conn
}

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
