package node

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/logx"
)

// A listener whose process is out of file descriptors cannot accept: the
// kernel keeps completing handshakes into the backlog, accept(2) fails
// with EMFILE, and the clients wait until they time out. net/http then
// logs every failed Accept and retries; so did the acceptor. The classic
// answer (libev's and NGINX's documentation of it) is to keep one
// descriptor in reserve: on EMFILE, close it, accept the connection,
// answer 503 and close, and take the reserve again. Clients hear at once
// that the node is full, and the log gets one summary per interval.

// acceptSummaryInterval is how often failed accepts are summed up.
const acceptSummaryInterval = 10 * time.Second

// response503NoFD is the answer to a connection accepted on the reserve.
var response503NoFD = func() []byte {
	body := `{"error": "node out of file descriptors"}` + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

// reserveListener is a net.Listener that answers 503 itself while the
// process is out of file descriptors, and retries other accept errors
// with backoff; its Accept returns only connections, or the error of a
// closed listener. It logs failed accepts as one summary per interval and
// counts them in onError, if set.
type reserveListener struct {
	net.Listener
	what      string // "proxy" or "admin", for the log
	log       zerolog.Logger
	onError   func(reason string) // counts a failed accept; may be nil
	openSpare func() (io.Closer, error)

	sum    *logx.Summarizer
	closed chan struct{}
	once   sync.Once

	mu    sync.Mutex // guards spare; Accept runs on one goroutine, Close on another
	spare io.Closer
}

// newReserveListener wraps ln; openSpare takes the reserve descriptor
// (nil: open the null device).
func newReserveListener(ln net.Listener, what string, log zerolog.Logger, onError func(string), openSpare func() (io.Closer, error)) *reserveListener {
	if openSpare == nil {
		openSpare = openDevNull
	}
	l := &reserveListener{
		Listener:  ln,
		what:      what,
		log:       log,
		onError:   onError,
		openSpare: openSpare,
		closed:    make(chan struct{}),
	}
	l.sum = logx.New(acceptSummaryInterval, func(s logx.Summary) {
		l.log.Warn().Str("listener", l.what).Int64("count", s.Count).Str("last_reason", s.Reason).
			Str("last_error", s.Detail).Dur("interval", acceptSummaryInterval).Msg("accept failed")
	})
	l.takeSpare()
	return l
}

func openDevNull() (io.Closer, error) { return os.Open(os.DevNull) }

// takeSpare opens the reserve descriptor unless it is held. Out of
// descriptors it fails; the next EMFILE tries again.
func (l *reserveListener) takeSpare() {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.closed: // Close released it for good; a shed ending now must not reopen it
		return
	default:
	}
	if l.spare != nil {
		return
	}
	if f, err := l.openSpare(); err == nil {
		l.spare = f
	}
}

// releaseSpare closes the reserve and reports whether there was one.
func (l *reserveListener) releaseSpare() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.spare == nil {
		return false
	}
	_ = l.spare.Close()
	l.spare = nil
	return true
}

// Accept waits for the next connection. While out of descriptors it
// answers the queued connections 503 on the reserve descriptor; on other
// errors it backs off as net/http does (5 ms doubling to 1 s).
func (l *reserveListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			// A descriptor was free: if another thread took the
			// reserve's slot during a shed, this is the moment to retake
			// it, before the next EMFILE finds none.
			l.takeSpare()
			return c, nil
		}
		select {
		case <-l.closed:
			return nil, net.ErrClosed
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		reason := acceptErrorReason(err)
		if l.onError != nil {
			l.onError(reason)
		}
		l.sum.Add(reason, err.Error())
		if reason == "fd_limit" {
			c, handled := l.shed()
			if c != nil {
				return c, nil
			}
			if handled {
				backoff = 0
				continue
			}
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-l.closed:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

// shedAcceptGuard bounds the accept on the freed reserve, in case the
// queued client is gone by then.
const shedAcceptGuard = 100 * time.Millisecond

// shed runs after an EMFILE. It waits, holding the reserve, until a
// client is queued: on Linux accept4 fails with EMFILE before it looks at
// the queue, so the error alone does not mean anyone waits, and freeing
// the reserve then would leave its slot free while Accept parks, for a
// health check, a backend dial or the runtime to take (for good, if that
// is a session's connection: the next client then got no answer). With a
// client queued it accepts it normally if a descriptor freed meanwhile,
// and returns it; otherwise it frees the reserve, accepts on it, answers
// 503, closes and takes the reserve back. handled reports that the caller
// may accept again at once; false (no reserve, or another thread took the
// freed slot first) means back off. The slot is still exposed between the
// free and accept4, two system calls; a reserve lost there is retaken on
// the next shed or accept that finds a descriptor free.
func (l *reserveListener) shed() (c net.Conn, handled bool) {
	polled := false
	for {
		select {
		case <-l.closed:
			return nil, true // the caller's Accept reports the close
		default:
		}
		l.takeSpare() // the thread that took its slot may have let go
		queued, ok := waitQueued(l.Listener)
		if !ok {
			break // cannot poll this listener: accept blind
		}
		polled = true
		if queued {
			break
		}
	}
	if polled {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, true
		}
		if acceptErrorReason(err) != "fd_limit" {
			return nil, false
		}
	}
	if !l.releaseSpare() {
		return nil, false
	}
	defer l.takeSpare()
	dl, canDeadline := l.Listener.(interface{ SetDeadline(time.Time) error })
	if polled && canDeadline {
		_ = dl.SetDeadline(time.Now().Add(shedAcceptGuard))
		defer func() { _ = dl.SetDeadline(time.Time{}) }()
	}
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, false
	}
	answerNoFD(c, moreQueued(l.Listener))
	return nil, true
}

// noFDReadWait is how long a shed waits for a lone client's request.
const noFDReadWait = 20 * time.Millisecond

// answerNoFD writes the 503 and closes c. It first reads what the client
// has sent: closing a socket with unread bytes sends a reset, which can
// destroy the answer before the client reads it. A lone client gets up to
// noFDReadWait for its request to arrive. With others queued behind it,
// it gets only what is there already: the accept loop and the one reserve
// descriptor wait meanwhile, and a flood of connections that send nothing
// (1,000 of them, 20 ms each) kept a real client behind them from its 503
// for longer than it would wait.
func answerNoFD(c net.Conn, hurry bool) {
	var buf [4096]byte
	if !hurry || !readNow(c, buf[:]) {
		_ = c.SetDeadline(time.Now().Add(noFDReadWait))
		_, _ = c.Read(buf[:])
	}
	_ = c.SetDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write(response503NoFD)
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	c.Close()
}

// Close closes the listener, the reserve and the summary; pending counts
// are logged now. It is safe to call more than once.
func (l *reserveListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		close(l.closed)
		l.releaseSpare()
		l.sum.Stop()
	})
	return err
}

// acceptErrorReason puts an accept error into a small bounded set, the
// label of meshlb_accept_errors_total.
func acceptErrorReason(err error) string {
	switch {
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "fd_limit"
	case errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.ENOMEM):
		return "no_memory"
	case errors.Is(err, syscall.ECONNABORTED):
		return "aborted"
	}
	return "other"
}

// withReserve wraps a listener of the node in a reserveListener that
// counts its failed accepts in meshlb_accept_errors_total.
func (n *Node) withReserve(ln net.Listener, what string) net.Listener {
	errs := n.metrics.acceptErrors
	return newReserveListener(ln, what, n.log, func(reason string) { errs.WithLabelValues(what, reason).Inc() }, nil)
}
