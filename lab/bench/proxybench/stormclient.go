//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/meshlb/meshlb/lab/internal/wsload"
)

// The storm's clients run in worker processes (proxybench storm-client),
// a few thousand each: one process could not hold 30,000 sockets under
// the usual open-file limit, and the proxies' own limits are what the
// storm measures.
//
// A worker's conversation with the bench, one line each way:
//
//	bench: hold    worker: ready <opened> <failed>   open every client and learn its backend
//	bench: go      (none)                            burst: every client dials at once
//	bench: status  worker: status <lost> <back>      how many lost their connection, how many are back
//	bench: report  worker: <stormReport as JSON>     then the worker closes everything and exits
//
// In hold mode a client whose connection drops reconnects at once (no
// backoff), first through the node after its own and then round the
// list; it is back when a WebSocket answers "whoami" with the backend it
// had. In burst mode each client dials once at "go" and is done when its
// first "whoami" is answered.

// stormReport is one worker's figures.
type stormReport struct {
	GapsUs []int64 `json:"gaps_us"` // per client: lost (or "go") to back
	// BackUnixNs is when the last client came back.
	BackUnixNs int64          `json:"back_unix_ns"`
	Errors     map[string]int `json:"errors"` // failed attempts by kind
	Moved      int            `json:"moved"`  // came back on another backend
	Lost       int            `json:"lost"`   // never came back
}

type stormWorker struct {
	addrs   []string
	from, n int
	burst   bool
	timeout time.Duration

	mu       sync.Mutex
	gaps     []int64
	lastBack int64
	errs     map[string]int
	moved    int

	lost, back atomic.Int64
	conns      []net.Conn
	done       chan struct{}
}

func stormClientMain(args []string) int {
	fs := flag.NewFlagSet("storm-client", flag.ContinueOnError)
	w := &stormWorker{errs: map[string]int{}, done: make(chan struct{})}
	addrs := fs.String("addrs", "", "comma-separated host:port of the proxies; client i's own is i % len")
	fs.IntVar(&w.from, "from", 0, "first client index")
	fs.IntVar(&w.n, "n", 0, "clients")
	fs.BoolVar(&w.burst, "burst", false, "dial every client at once on go (else hold, and reconnect on loss)")
	fs.DurationVar(&w.timeout, "timeout", 2*time.Minute, "a client not back after this is lost")
	if err := fs.Parse(args); err != nil || *addrs == "" || w.n < 1 {
		fmt.Fprintln(os.Stderr, "storm-client: want --addrs and --n")
		return 2
	}
	if _, err := wsload.RaiseNofile(); err != nil {
		fmt.Fprintln(os.Stderr, "storm-client:", err)
		return 1
	}
	w.addrs = strings.Split(*addrs, ",")
	w.conns = make([]net.Conn, w.n)
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...); out.Flush() }
	for in.Scan() {
		switch in.Text() {
		case "hold":
			ok, failed := w.hold()
			say("ready %d %d", ok, failed)
		case "go":
			w.goBurst()
		case "status":
			say("status %d %d", w.lost.Load(), w.back.Load())
		case "report":
			close(w.done)
			w.mu.Lock()
			for _, c := range w.conns {
				if c != nil {
					c.Close()
				}
			}
			r := stormReport{GapsUs: w.gaps, BackUnixNs: w.lastBack, Errors: w.errs, Moved: w.moved,
				Lost: int(w.lost.Load() - w.back.Load())}
			w.mu.Unlock()
			b, _ := json.Marshal(r)
			say("%s", b)
			return 0
		}
	}
	return 0
}

func (w *stormWorker) url(i, via int) string {
	return fmt.Sprintf("ws://%s/ws?session_id=storm-%d", w.addrs[via%len(w.addrs)], i)
}

// whoami dials one WebSocket for client i through addrs[via] and asks its
// backend's name.
func (w *stormWorker) whoami(i, via int) (net.Conn, string, error) {
	c, br, err := wsload.Dial(ctx, w.url(i, via), i)
	if err != nil {
		return nil, "", err
	}
	var r io.Reader = c
	if br != nil {
		r = br
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wsutil.WriteClientText(c, []byte("whoami")); err != nil {
		c.Close()
		return nil, "", err
	}
	p, err := wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{r, c})
	if err != nil {
		c.Close()
		return nil, "", err
	}
	c.SetDeadline(time.Time{})
	return c, string(p), nil
}

// hold opens every client (64 at a time), then leaves each waiting for
// its connection to drop.
func (w *stormWorker) hold() (ok, failed int) {
	var next atomic.Int64
	var nok, nfail atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= w.n {
					return
				}
				i := w.from + k
				c, backend, err := w.whoami(i, i)
				if err != nil {
					nfail.Add(1)
					w.fail(err)
					continue
				}
				nok.Add(1)
				w.mu.Lock()
				w.conns[k] = c
				w.mu.Unlock()
				go w.watch(k, i, c, backend)
			}
		})
	}
	wg.Wait()
	return int(nok.Load()), int(nfail.Load())
}

// watch reads c until it fails, then reconnects client i.
func (w *stormWorker) watch(k, i int, c net.Conn, backend string) {
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	select {
	case <-w.done:
		return
	default:
	}
	lostAt := time.Now()
	w.lost.Add(1)
	for try := 0; time.Since(lostAt) < w.timeout; try++ {
		// The others first, split between them, then round the list.
		via := i + 1 + (i/len(w.addrs))%2 + try
		nc, got, err := w.whoami(i, via)
		if err != nil {
			w.fail(err)
			continue
		}
		w.backAt(k, nc, lostAt, got != backend)
		return
	}
}

// goBurst dials every client at once and returns when all are answered.
func (w *stormWorker) goBurst() {
	start := time.Now()
	var wg sync.WaitGroup
	for k := range w.n {
		i := w.from + k
		wg.Go(func() {
			w.lost.Add(1)
			c, _, err := w.whoami(i, 0)
			if err != nil {
				w.fail(err)
				return
			}
			w.backAt(k, c, start, false)
		})
	}
	wg.Wait()
}

// backAt records client k back on c, since it was lost (or the burst).
func (w *stormWorker) backAt(k int, c net.Conn, since time.Time, moved bool) {
	now := time.Now()
	w.mu.Lock()
	w.conns[k] = c
	w.gaps = append(w.gaps, now.Sub(since).Microseconds())
	w.lastBack = max(w.lastBack, now.UnixNano())
	if moved {
		w.moved++
	}
	w.mu.Unlock()
	w.back.Add(1)
}

func (w *stormWorker) fail(err error) {
	w.mu.Lock()
	w.errs[stormErrKind(err)]++
	w.mu.Unlock()
}

// stormErrKind names an error for the report without its addresses.
func stormErrKind(err error) string {
	var se ws.StatusError
	switch s := err.Error(); {
	case errors.As(err, &se):
		return fmt.Sprintf("status %d", int(se))
	case strings.Contains(s, "refused"):
		return "connection refused"
	case strings.Contains(s, "reset"):
		return "connection reset"
	case strings.Contains(s, "timeout"):
		return "timeout"
	case strings.Contains(s, "EOF"):
		return "EOF"
	default:
		return s
	}
}
