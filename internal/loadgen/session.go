package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// session is one simulated client: a session ID that connects, asks,
// reconnects and remembers every backend it met. Only its own goroutine
// touches it until Run has waited for that goroutine.
type session struct {
	id       string
	backends []string // distinct, in the order met
	last     string   // backend of the latest answer
	lastSeen time.Time
	// connAt: when the current connection was dialled, which is when a
	// node chose its backend. lastConn: connAt of the latest answer.
	connAt, lastConn time.Time
	moves            []rawMove
	connects         int
}

// rawMove is a session meeting another backend than before: oldConn is
// when the connection that last reached the old backend was dialled,
// lastOld the last answer from the old backend, firstNew the first from
// the new one.
type rawMove struct {
	from, to                   string
	oldConn, lastOld, firstNew time.Time
}

// met records a whoami answer.
func (s *session) met(backend string, at time.Time) {
	switch {
	case s.last == "":
		s.backends = append(s.backends, backend)
	case backend != s.last:
		oldConn := s.lastConn
		if oldConn.IsZero() || oldConn.After(s.lastSeen) {
			oldConn = s.lastSeen
		}
		s.moves = append(s.moves, rawMove{from: s.last, to: backend, oldConn: oldConn, lastOld: s.lastSeen, firstNew: at})
		found := false
		for _, b := range s.backends {
			found = found || b == backend
		}
		if !found {
			s.backends = append(s.backends, backend)
		}
	}
	s.last, s.lastSeen, s.lastConn = backend, at, s.connAt
}

// backoff returns the wait before reconnect attempt n (n >= 1):
// exponential from min, capped at max, with equal jitter ([d/2, d]) so a
// crowd that lost one node does not come back in step.
func backoff(n int, lo, hi time.Duration, rng *rand.Rand) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + time.Duration(rng.Int64N(int64(d/2)+1))
}

// runSession is the body of one session's goroutine: it connects until ctx
// ends and returns what the session met.
func (b *Bench) runSession(ctx context.Context, i int) *session {
	s := &session{id: fmt.Sprintf("%s%d", b.cfg.SessionPrefix, i)}
	rng := rand.New(rand.NewPCG(b.cfg.Seed, uint64(i)))
	tr := b.transports[i%len(b.transports)]
	client := &http.Client{Transport: tr}
	payload := make([]byte, b.cfg.PayloadSize)
	for k := range payload {
		payload[k] = byte(rng.UintN(256))
	}

	var lastNode string
	attempt := 0
	for ctx.Err() == nil {
		if attempt > 0 && !sleep(ctx, backoff(attempt, b.cfg.BackoffMin, b.cfg.BackoffMax, rng)) {
			break
		}
		attempt++
		node, err := b.targets.pick(ctx, lastNode)
		if err != nil {
			if ctx.Err() == nil {
				b.st.op(kindOfResolveErr(err))
			}
			continue
		}
		lastNode = node
		dialAt := time.Now()
		c, hs, err := b.dial(ctx, client, node, s.id)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			kind := kindOfDialErr(err)
			b.st.connectFailed(kind)
			if kind == "dial_refused" || kind == "dial_timeout" || kind == "dial_unreachable" {
				b.targets.failed(node)
			}
			b.log.Debug().Str("session", s.id).Str("node", node).Str("kind", kind).Err(err).Msg("connect failed")
			continue
		}
		b.st.connected(hs, s.connects > 0)
		s.connects++
		s.connAt = dialAt
		if b.converse(ctx, c, s, payload) {
			attempt = 0
		}
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dial opens the session's WebSocket through node and returns it with the
// handshake time (TCP connect included).
func (b *Bench) dial(ctx context.Context, client *http.Client, node, id string) (*websocket.Conn, time.Duration, error) {
	u := url.URL{Scheme: "ws", Host: node, Path: b.path, RawQuery: b.query}
	q := u.Query()
	q.Set(b.cfg.KeyParam, id)
	u.RawQuery = q.Encode()
	dctx, cancel := context.WithTimeout(ctx, b.cfg.ConnectTimeout)
	defer cancel()
	start := time.Now()
	c, resp, err := websocket.Dial(dctx, u.String(), &websocket.DialOptions{HTTPClient: client})
	d := time.Since(start)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, d, &handshakeError{status: resp.StatusCode, err: err}
		}
		return nil, d, err
	}
	c.SetReadLimit(int64(max(b.cfg.PayloadSize, 4096)) + 1024)
	return c, d, nil
}

// handshakeError is a node (or backend) answering the upgrade with
// something other than 101.
type handshakeError struct {
	status int
	err    error
}

func (e *handshakeError) Error() string {
	return fmt.Sprintf("handshake: HTTP %d: %v", e.status, e.err)
}
func (e *handshakeError) Unwrap() error { return e.err }

// reader reads one connection's messages on its own goroutine, so that a
// close frame or a reset is seen when it happens rather than at the next
// request.
type reader struct {
	msgs chan []byte
	quit chan struct{}
	done chan struct{}
	err  error // valid after done is closed
}

func startReader(c *websocket.Conn) *reader {
	r := &reader{msgs: make(chan []byte, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go r.loop(c)
	return r
}

func (r *reader) loop(c *websocket.Conn) {
	defer close(r.done)
	for {
		// No deadline here: the session closes the connection to stop us.
		_, m, err := c.Read(context.Background())
		if err != nil {
			r.err = err
			return
		}
		select {
		case r.msgs <- m:
		case <-r.quit:
			return
		}
	}
}

// converse asks whoami and echoes the payload every WhoamiInterval until
// the connection ends or ctx does. It reports whether the connection
// answered at least once (a healthy connection resets the backoff).
func (b *Bench) converse(ctx context.Context, c *websocket.Conn, s *session, payload []byte) (answered bool) {
	r := startReader(c)
	defer func() {
		close(r.quit)
		c.CloseNow()
		<-r.done
	}()
	tick := time.NewTicker(b.cfg.WhoamiInterval)
	defer tick.Stop()
	for {
		m, ok := b.request(c, r, "whoami_timeout", websocket.MessageText, []byte("whoami"))
		if !ok {
			return answered
		}
		if len(m) == 0 {
			b.st.op("whoami_empty")
			return answered
		}
		s.met(string(m), time.Now())
		answered = true
		b.st.whoami()

		start := time.Now()
		m, ok = b.request(c, r, "echo_timeout", websocket.MessageBinary, payload)
		if !ok {
			return answered
		}
		if !bytes.Equal(m, payload) {
			b.st.op("echo_mismatch")
			return answered
		}
		b.st.echo(time.Since(start))

		select {
		case <-ctx.Done():
			// The run is over: say goodbye properly, bounded by the
			// library's own close-handshake timeout.
			c.Close(websocket.StatusNormalClosure, "bench done")
			return answered
		case <-r.done:
			b.st.disconnected(r.err)
			return answered
		case <-tick.C:
		}
	}
}

// request sends one message and waits for one answer. On failure it counts
// what happened (a disconnect, or an error of timeoutKind) and returns
// false; the caller then drops the connection.
func (b *Bench) request(c *websocket.Conn, r *reader, timeoutKind string, typ websocket.MessageType, msg []byte) ([]byte, bool) {
	timer := time.NewTimer(b.cfg.RequestTimeout)
	defer timer.Stop()
	wctx, cancel := context.WithTimeout(context.Background(), b.cfg.RequestTimeout)
	err := c.Write(wctx, typ, msg)
	cancel()
	if err != nil {
		// The reader usually knows better why (a close frame that was
		// already on its way): give it a moment to say so.
		select {
		case <-r.done:
			b.st.disconnected(r.err)
		case <-time.After(time.Second):
			b.st.disconnected(err)
		}
		return nil, false
	}
	select {
	case m := <-r.msgs:
		return m, true
	case <-r.done:
		b.st.disconnected(r.err)
		return nil, false
	case <-timer.C:
		b.st.op(timeoutKind)
		return nil, false
	}
}

// disconnectKind names why a connection ended: close_NNNN for a close
// frame received, reset, eof (closed without a close frame) or other.
func disconnectKind(err error) string {
	if code := websocket.CloseStatus(err); code != -1 {
		return fmt.Sprintf("close_%d", int(code))
	}
	switch {
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
}

// kindOfDialErr names a failed connect for the error table.
func kindOfDialErr(err error) string {
	var hs *handshakeError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &hs):
		return fmt.Sprintf("handshake_http_%d", hs.status)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "dial_refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "dial_unreachable"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "dial_timeout"
	case errors.As(err, &dnsErr):
		return "resolve"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "handshake_reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "dial_no_source_port"
	}
	return "dial_other"
}

func kindOfResolveErr(err error) string {
	if errors.Is(err, errNoNodes) {
		return "no_nodes"
	}
	return "resolve"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
