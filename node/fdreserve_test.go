package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// fdStarvedListener fails Accept with EMFILE while the reserve descriptor
// is held, as a process at its limit does, and accepts a queued client
// (one end of a pipe) once it is freed.
type fdStarvedListener struct {
	spareHeld atomic.Bool
	queued    chan net.Conn // server ends of clients waiting in the backlog
	closed    chan struct{}
	once      sync.Once
	emfiles   atomic.Int32
}

func (l *fdStarvedListener) Accept() (net.Conn, error) {
	select {
	case <-l.closed:
		return nil, net.ErrClosed
	default:
	}
	if l.spareHeld.Load() {
		l.emfiles.Add(1)
		time.Sleep(time.Millisecond) // a real accept(2) does not spin this fast either
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	select {
	case c := <-l.queued:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *fdStarvedListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *fdStarvedListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

type spareFD struct{ l *fdStarvedListener }

func (s spareFD) Close() error { s.l.spareHeld.Store(false); return nil }

// TestReserveListenerAnswers503 queues clients on a listener out of file
// descriptors: each gets a 503 at once rather than waiting, the reserve is
// taken back after each, failed accepts are counted, and the log holds a
// summary, not a line per failure.
func TestReserveListenerAnswers503(t *testing.T) {
	fake := &fdStarvedListener{queued: make(chan net.Conn, 8), closed: make(chan struct{})}
	var logs lockedLog
	var counted sync.Map
	l := newReserveListener(fake, "proxy", zerolog.New(&logs), func(r string) {
		v, _ := counted.LoadOrStore(r, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
	}, func() (io.Closer, error) {
		fake.spareHeld.Store(true)
		return spareFD{fake}, nil
	})

	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
			err = errors.New("Accept returned a connection while out of descriptors")
		}
		accepted <- err
	}()
	const clients = 5
	for i := range clients {
		srv, cli := net.Pipe()
		fake.queued <- srv
		_ = cli.SetDeadline(time.Now().Add(5 * time.Second))
		go func() { _, _ = fmt.Fprintf(cli, "GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i) }()
		res, err := http.ReadResponse(bufio.NewReader(cli), nil)
		if err != nil {
			t.Fatalf("client %d: %v; want 503", i, err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "file descriptors") {
			t.Fatalf("client %d: %d %q; want 503 naming the cause", i, res.StatusCode, body)
		}
		cli.Close()
	}
	l.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v; want net.ErrClosed", err)
	}
	v, _ := counted.Load("fd_limit")
	if v == nil || v.(*atomic.Int32).Load() < clients {
		t.Fatalf("fd_limit counted %v; want at least %d", v, clients)
	}
	if n := strings.Count(logs.String(), `"message":"accept failed"`); n < 1 || n > 2 {
		t.Fatalf("%d log lines for %d failed accepts; want one or two:\n%s", n, fake.emfiles.Load(), logs.String())
	}
}

// lockedLog is a log sink written from several goroutines.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestAcceptErrorReason(t *testing.T) {
	for err, want := range map[error]string{
		os.NewSyscallError("accept4", syscall.EMFILE):       "fd_limit",
		os.NewSyscallError("accept4", syscall.ENFILE):       "fd_limit",
		os.NewSyscallError("accept4", syscall.ENOBUFS):      "no_memory",
		os.NewSyscallError("accept4", syscall.ECONNABORTED): "aborted",
		errors.New("something else"):                        "other",
	} {
		if got := acceptErrorReason(&net.OpError{Op: "accept", Err: err}); got != want {
			t.Errorf("acceptErrorReason(%v) = %q; want %q", err, got, want)
		}
	}
}
