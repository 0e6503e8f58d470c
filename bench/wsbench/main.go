// Command wsbench measures meshlb's WebSocket proxy on this machine: what an
// idle proxied WebSocket costs a node in memory, and echo throughput and CPU
// per message through a node against going straight to the backends.
//
// It builds nothing. It runs an existing meshlb binary as 3 echo backends and
// one node on loopback, drives them from this process, prints a table and
// stops them:
//
//	go build -o bin/meshlb ./cmd/meshlb && go run ./bench/wsbench
//	make bench-ws    # the same
//
// The figures:
//
//   - RSS per idle WebSocket: VmRSS of the node (/proc/PID/status) before
//     and after --idle WebSockets are opened through it and left idle,
//     (after-before)/--idle. The same against one echo backend dialled
//     directly puts the proxy's cost beside a backend's. Client sockets come
//     from 127.0.0.2..127.0.0.254 so that one source address's ephemeral
//     ports are no limit; the client keeps only the net.Conn (gobwas/ws, no
//     goroutine per idle socket). A second round of as many, after the
//     first is closed, is measured over the first round's baseline: it
//     lands on freed heap that Go zeroes on reuse, so pages a fresh process
//     never touches (buffers nothing was written to) count, as they do in
//     a node that has been running.
//   - Echo throughput: --conns WebSockets, each keeping --inflight binary
//     messages of --size bytes in flight, for --duration; direct (the conns
//     spread over the 3 backends) and via the node, interleaved, --runs
//     times; medians are printed.
//   - CPU per message: utime+stime (/proc/PID/stat) of the node and of the
//     backends over the same window, divided by the messages echoed.
//   - Sticky: every connection with one session_id reaches the same backend
//     (the echo answers the text "whoami" with its id).
//
// Client, node and backends share the machine's cores, so a throughput
// figure is that of the whole loop on this machine, not of the node alone:
// compare ratios, not absolute figures, across machines.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on
// every Linux ABI.
const userHZ = 100

type options struct {
	meshlb   string
	idle     int
	conns    int
	inflight int
	size     int
	duration time.Duration
	warmup   time.Duration
	runs     int
}

func main() {
	var o options
	flag.StringVar(&o.meshlb, "meshlb", "bin/meshlb", "path to the meshlb binary (build it first)")
	flag.IntVar(&o.idle, "idle", 9000, "idle WebSockets opened for the RSS figure")
	flag.IntVar(&o.conns, "conns", 64, "WebSockets in the echo throughput test")
	flag.IntVar(&o.inflight, "inflight", 8, "messages in flight per WebSocket")
	flag.IntVar(&o.size, "size", 64, "message size in bytes")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured window of one throughput run")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured traffic before each throughput window")
	flag.IntVar(&o.runs, "runs", 3, "throughput runs, each direct and via meshlb")
	flag.Parse()
	if o.idle < 1 || o.conns < 1 || o.inflight < 1 || o.size < 0 || o.runs < 1 || o.duration <= 0 {
		fmt.Fprintln(os.Stderr, "wsbench: --idle, --conns, --inflight, --runs must be >= 1, --size >= 0, --duration > 0")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	b := &bench{o: o}
	err := b.run(ctx)
	stop()
	b.stopAll()
	b.reportProblems()
	if err != nil {
		fmt.Fprintf(os.Stderr, "wsbench: %v\n", err)
		os.Exit(1)
	}
}

// bench holds the processes under test and what was found.
type bench struct {
	o        options
	backends []*proc
	node     *proc
	proxy    string // node's proxy host:port
	admin    string // node's admin host:port

	mu       sync.Mutex
	problems []string
}

func (b *bench) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.mu.Lock()
	b.problems = append(b.problems, msg)
	b.mu.Unlock()
	logf("PROBLEM: %s", msg)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "wsbench: "+format+"\n", args...)
}

func (b *bench) run(ctx context.Context) error {
	o := &b.o
	if _, err := os.Stat(o.meshlb); err != nil {
		return fmt.Errorf("%v (build it first: go build -o bin/meshlb ./cmd/meshlb)", err)
	}
	limit, err := raiseNofile()
	if err != nil {
		return err
	}
	// The node holds 2 fds per proxied WebSocket, the client 1; the rest is
	// headroom for listeners, gossip and the runtime.
	if need := 2*o.idle + 200; uint64(need) > limit {
		max := (int(limit) - 200) / 2
		logf("RLIMIT_NOFILE is %d per process: the node needs 2 fds per proxied WebSocket, so --idle %d does not fit; using %d", limit, o.idle, max)
		o.idle = max
	}
	logf("RLIMIT_NOFILE %d (children inherit it)", limit)

	if err := b.startAll(ctx); err != nil {
		return err
	}

	res, err := b.sticky(ctx)
	if err != nil {
		return fmt.Errorf("sticky check: %w", err)
	}
	logf("sticky: %s", res)

	// Warm both paths up so the code they run is paged in before the
	// baselines are read.
	for _, u := range []func(int) string{b.directURL(0), b.proxyURL("warm")} {
		conns, err := openMany(ctx, 200, u)
		closeAll(conns)
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	time.Sleep(time.Second)

	// Each side twice: the first round lands on fresh pages, of which Go
	// leaves untouched what no one wrote; the second on the heap the first
	// freed, which Go zeroes on reuse, as in a node that has run a while.
	var direct, via idleResult
	for round := range 2 {
		d, err := b.idle(ctx, b.backends[0], b.directURL(0), false)
		if err != nil {
			return fmt.Errorf("idle direct: %w", err)
		}
		if round == 0 {
			direct = d
		} else {
			direct.rssAfter2 = d.rssAfter
		}
	}
	for round := range 2 {
		v, err := b.idle(ctx, b.node, b.proxyURL(fmt.Sprintf("idle%d", round)), true)
		if err != nil {
			return fmt.Errorf("idle via meshlb: %w", err)
		}
		if round == 0 {
			via = v
		} else {
			via.rssAfter2 = v.rssAfter
		}
	}

	var dr, vr []echoResult
	for r := range o.runs {
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false} // alternate, so a drift hits both sides
		}
		for _, viaNode := range order {
			e, err := b.echo(ctx, r, viaNode)
			if err != nil {
				return fmt.Errorf("echo run %d: %w", r+1, err)
			}
			if viaNode {
				vr = append(vr, e)
			} else {
				dr = append(dr, e)
			}
		}
	}
	b.printTable(direct, via, dr, vr, res)
	return nil
}

// proc is one meshlb process under test.
type proc struct {
	name   string
	addr   string // an echo backend's listen address
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	state  *os.ProcessState
	killed atomic.Bool // we signalled it
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// start runs meshlb with args. Its stderr is scanned: the first JSON line
// whose message is startedMsg (if not empty) is returned; every other line
// is copied to our stderr, and a warn or error line is a problem.
func (b *bench) start(ctx context.Context, name, startedMsg string, args ...string) (*proc, map[string]any, error) {
	cmd := exec.Command(b.o.meshlb, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, exited: make(chan struct{})}
	started := make(chan map[string]any, 1)
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var m map[string]any
			_ = json.Unmarshal([]byte(line), &m)
			if startedMsg != "" && m["message"] == startedMsg {
				select {
				case started <- m:
				default:
				}
				continue
			}
			fmt.Fprintf(os.Stderr, "[%s] %s\n", name, line)
			if lv, _ := m["level"].(string); lv == "warn" || lv == "error" || lv == "fatal" || lv == "panic" || m == nil {
				b.problem("%s logged: %s", name, line)
			}
		}
	}()
	go func() {
		<-scanDone // Wait closes the pipe; read it all first
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.exited)
		if !p.killed.Load() {
			b.problem("%s exited on its own: %v", name, p.state)
		}
	}()
	if startedMsg == "" {
		return p, nil, nil
	}
	select {
	case m := <-started:
		return p, m, nil
	case <-p.exited:
		return nil, nil, fmt.Errorf("%s exited at start: %v", name, p.state)
	case <-time.After(15 * time.Second):
		return p, nil, fmt.Errorf("%s: no %q line in 15s", name, startedMsg)
	case <-ctx.Done():
		return p, nil, ctx.Err()
	}
}

func (b *bench) startAll(ctx context.Context) error {
	var backendArgs []string
	for i := range 3 {
		id := fmt.Sprintf("web-%d", i+1)
		p, m, err := b.start(ctx, id, "echo backend started", "echo", "--listen", "127.0.0.1:0", "--id", id)
		if p != nil {
			b.backends = append(b.backends, p)
		}
		if err != nil {
			return err
		}
		addr, _ := m["addr"].(string)
		if addr == "" {
			return fmt.Errorf("%s: no addr in its start line", id)
		}
		p.name, p.addr = id+"@"+addr, addr
		backendArgs = append(backendArgs, "--backend", id+"="+addr)
	}
	// At --log-level warn the node does not log "node started" (an info
	// line), so its ports are picked here and readiness comes from /readyz.
	proxy, err := freePort()
	if err != nil {
		return err
	}
	admin, err := freePort()
	if err != nil {
		return err
	}
	b.proxy, b.admin = proxy, admin
	args := append([]string{"node", "--name", "n0", "--gossip-addr", "127.0.0.1:0",
		"--listen", proxy, "--admin", admin, "--log-level", "warn"}, backendArgs...)
	b.node, _, err = b.start(ctx, "node", "", args...)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := httpStatus("http://" + admin + "/readyz")
		m, _ := b.metrics()
		if code == 200 && m["meshlb_ring_backends"] == 3 {
			break
		}
		select {
		case <-b.node.exited:
			return fmt.Errorf("node exited at start: %v", b.node.state)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node not ready with 3 backends in 20s (readyz %d)", code)
		}
	}
	logf("3 echo backends, node %s (admin %s) ready; binary %s", proxy, admin, b.o.meshlb)
	return nil
}

// stopAll sends SIGTERM to every process, waits, and checks they exited 0.
func (b *bench) stopAll() {
	all := append(slices.Clone(b.backends), b.node)
	for _, p := range all {
		if p == nil {
			continue
		}
		p.killed.Store(true)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range all {
		if p == nil {
			continue
		}
		select {
		case <-p.exited:
			if !p.state.Success() {
				b.problem("%s exit after SIGTERM: %v", p.name, p.state)
			}
		case <-time.After(40 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			b.problem("%s did not stop within 40s of SIGTERM; killed", p.name)
		}
	}
}

func (b *bench) reportProblems() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) == 0 {
		fmt.Println("\nproblems seen in meshlb: none (no warn/error log line, no unexpected exit, no leak after closing)")
		return
	}
	fmt.Printf("\nproblems seen (%d):\n", len(b.problems))
	for i, p := range b.problems {
		if i == 20 {
			fmt.Printf("  ... %d more\n", len(b.problems)-i)
			break
		}
		fmt.Println("  -", p)
	}
}

// alive fails if a process under test has exited.
func (b *bench) alive() error {
	for _, p := range append(slices.Clone(b.backends), b.node) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %v", p.name, p.state)
		default:
		}
	}
	return nil
}

func (b *bench) directURL(i int) func(int) string {
	host := b.backends[i].addr
	return func(k int) string { return fmt.Sprintf("ws://%s/ws?session_id=d%d", host, k) }
}

func (b *bench) proxyURL(prefix string) func(int) string {
	return func(k int) string { return fmt.Sprintf("ws://%s/ws?session_id=%s-%d", b.proxy, prefix, k) }
}

// idleResult is one idle-WebSocket measurement of one process.
type idleResult struct {
	n                     int
	rssBefore, rssAfter   int64 // KiB
	anonBefore, anonAfter int64 // KiB
	fdBefore, fdAfter     int
	open                  time.Duration
	rssAfter2             int64 // KiB, after a second round of as many
	// From the node's /metrics; zero for a backend.
	goroutinesBefore, goroutinesAfter float64
	heapBefore, heapAfter             float64
	wsOpen                            float64
}

func (r idleResult) perConnKiB() float64 { return float64(r.rssAfter-r.rssBefore) / float64(r.n) }

// perConnKiB2 is the second round's RSS over the first round's baseline.
func (r idleResult) perConnKiB2() float64 { return float64(r.rssAfter2-r.rssBefore) / float64(r.n) }

// idle opens --idle WebSockets to url, lets them sit, and reads p's memory
// before and after; then closes them and checks p gives the fds back.
func (b *bench) idle(ctx context.Context, p *proc, url func(int) string, isNode bool) (idleResult, error) {
	n := b.o.idle
	var r idleResult
	settle(p.pid())
	r.rssBefore, r.anonBefore = rss(p.pid())
	r.fdBefore = fdCount(p.pid())
	if isNode {
		m, _ := b.metrics()
		r.goroutinesBefore, r.heapBefore = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]
	}
	logf("idle %s: opening %d WebSockets (RSS before %d KiB, %d fds)", p.name, n, r.rssBefore, r.fdBefore)
	t0 := time.Now()
	conns, err := openMany(ctx, n, url)
	r.open = time.Since(t0)
	defer func() {
		closeAll(conns)
		b.waitReleased(p, r.fdBefore, r.goroutinesBefore)
	}()
	if err != nil {
		return r, fmt.Errorf("opened %d of %d: %w", len(conns), n, err)
	}
	r.n = len(conns)
	time.Sleep(2 * time.Second)
	settle(p.pid())
	r.rssAfter, r.anonAfter = rss(p.pid())
	r.fdAfter = fdCount(p.pid())
	if isNode {
		m, _ := b.metrics()
		r.goroutinesAfter, r.heapAfter, r.wsOpen = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"], m["meshlb_websockets"]
		if int(r.wsOpen) != n {
			b.problem("node reports meshlb_websockets %v with %d open", r.wsOpen, n)
		}
	}
	logf("idle %s: %d open in %v; RSS after %d KiB (%+.1f KiB each), %d fds", p.name, n, r.open.Round(time.Millisecond), r.rssAfter, r.perConnKiB(), r.fdAfter)
	if err := b.alive(); err != nil {
		return r, err
	}
	return r, nil
}

// waitReleased waits until p is back to about its baseline fds (and, for
// the node, its baseline goroutines and no proxied WebSocket left) after
// the client closed everything.
func (b *bench) waitReleased(p *proc, fdBefore int, goroutinesBefore float64) {
	isNode := p == b.node
	deadline := time.Now().Add(30 * time.Second)
	for {
		fds := fdCount(p.pid())
		var ws, gr float64
		if isNode {
			m, _ := b.metrics()
			ws, gr = m["meshlb_websockets"], m["go_goroutines"]
		}
		if fds <= fdBefore+5 && ws == 0 && gr <= goroutinesBefore+5 {
			return
		}
		if time.Now().After(deadline) {
			b.problem("%s still holds %d fds (baseline %d), %v WebSockets, %v goroutines (baseline %v) 30s after the client closed all",
				p.name, fds, fdBefore, ws, gr, goroutinesBefore)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// settle waits until pid's VmRSS stops moving (within 0.5% over a second,
// at most 10s): the process is another program, so its GC cannot be forced.
func settle(pid int) {
	prev, _ := rss(pid)
	for range 10 {
		time.Sleep(time.Second)
		cur, _ := rss(pid)
		if d := cur - prev; d*200 <= prev && -d*200 <= prev {
			return
		}
		prev = cur
	}
}

// openMany dials n WebSockets (url(i) for the i-th) with a few dials at a
// time, source addresses spread over 127.0.0.2..127.0.0.254. On error it
// returns those it opened.
func openMany(ctx context.Context, n int, url func(int) string) ([]net.Conn, error) {
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
				c, br, err := dial(ctx, url(i), i)
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

// dial opens one WebSocket from source address 127.0.0.(2 + k%253). br is
// non-nil if the server sent bytes past its handshake.
func dial(ctx context.Context, url string, k int) (net.Conn, *bufio.Reader, error) {
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

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// echoResult is one throughput run.
type echoResult struct {
	msgs                               int64
	secs                               float64
	nodeTicks, backendTicks, selfTicks int64
}

func (e echoResult) rate() float64 { return float64(e.msgs) / e.secs }

// µs of CPU per message.
func perMsg(ticks, msgs int64) float64 { return float64(ticks) * 1e6 / userHZ / float64(msgs) }

// echo runs one throughput test, direct to the backends or via the node.
func (b *bench) echo(ctx context.Context, run int, viaNode bool) (echoResult, error) {
	o := b.o
	what := "direct"
	if viaNode {
		what = "via meshlb"
	}
	payload := make([]byte, o.size)
	for i := range payload {
		payload[i] = byte(rand.IntN(256))
	}
	// One masked frame, written again and again: the client's work is the
	// same both ways and small.
	frame := ws.MustCompileFrame(ws.MaskFrameWith(ws.NewBinaryFrame(payload), ws.NewMask()))

	type conn struct {
		c  net.Conn
		br *bufio.Reader
	}
	nodeFDs := fdCount(b.node.pid())
	m, _ := b.metrics()
	nodeGoroutines := m["go_goroutines"]
	conns := make([]conn, 0, o.conns)
	defer func() {
		for _, c := range conns {
			c.c.Close()
		}
	}()
	for i := range o.conns {
		url := b.directURL(i % len(b.backends))(i)
		if viaNode {
			url = b.proxyURL(fmt.Sprintf("tp%d", run))(i)
		}
		c, br, err := dial(ctx, url, i)
		if err != nil {
			return echoResult{}, fmt.Errorf("%s dial %d: %w", what, i, err)
		}
		if br == nil {
			br = bufio.NewReaderSize(c, 32<<10)
		}
		conns = append(conns, conn{c, br})
	}

	var count, bad atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range conns {
		tokens := make(chan struct{}, o.inflight)
		for range o.inflight {
			tokens <- struct{}{}
		}
		wg.Go(func() { // writer
			for {
				select {
				case <-done:
					return
				case <-tokens:
				}
				if _, err := c.c.Write(frame); err != nil {
					select {
					case <-done:
					default:
						firstErr.CompareAndSwap(nil, fmt.Errorf("write: %w", err))
					}
					return
				}
			}
		})
		wg.Go(func() { // reader
			buf := make([]byte, o.size)
			for {
				h, err := ws.ReadHeader(c.br)
				if err == nil {
					if h.OpCode != ws.OpBinary || h.Length != int64(o.size) || h.Masked {
						bad.Add(1)
						_, err = io.CopyN(io.Discard, c.br, h.Length)
					} else if _, err = io.ReadFull(c.br, buf); err == nil && !bytes.Equal(buf, payload) {
						bad.Add(1)
					}
				}
				if err != nil {
					select {
					case <-done:
					default:
						firstErr.CompareAndSwap(nil, fmt.Errorf("read: %w", err))
					}
					return
				}
				count.Add(1)
				tokens <- struct{}{}
			}
		})
	}

	pids := b.pids()
	sleepCtx(ctx, o.warmup)
	m0, t0, c0 := count.Load(), time.Now(), cpu(pids)
	sleepCtx(ctx, o.duration)
	m1, t1, c1 := count.Load(), time.Now(), cpu(pids)
	close(done)
	for _, c := range conns {
		c.c.Close()
	}
	wg.Wait()
	conns = nil

	if err := ctx.Err(); err != nil {
		return echoResult{}, err
	}
	if err, _ := firstErr.Load().(error); err != nil {
		b.problem("echo %s run %d: %v", what, run+1, err)
	}
	if n := bad.Load(); n > 0 {
		b.problem("echo %s run %d: %d messages came back wrong", what, run+1, n)
	}
	if err := b.alive(); err != nil {
		return echoResult{}, err
	}
	e := echoResult{
		msgs:         m1 - m0,
		secs:         t1.Sub(t0).Seconds(),
		nodeTicks:    c1[0] - c0[0],
		backendTicks: c1[1] + c1[2] + c1[3] - c0[1] - c0[2] - c0[3],
		selfTicks:    c1[4] - c0[4],
	}
	if e.msgs == 0 {
		return e, fmt.Errorf("%s: no message echoed", what)
	}
	logf("echo run %d %-10s %9.0f msg/s; CPU µs/msg: node %.2f, backends %.2f, client %.2f",
		run+1, what, e.rate(), perMsg(e.nodeTicks, e.msgs), perMsg(e.backendTicks, e.msgs), perMsg(e.selfTicks, e.msgs))
	if viaNode {
		// Every proxied WebSocket of the run must be gone again.
		b.waitReleased(b.node, nodeFDs, nodeGoroutines)
	}
	return e, nil
}

// pids is node, web-1, web-2, web-3, this process.
func (b *bench) pids() []int {
	return []int{b.node.pid(), b.backends[0].pid(), b.backends[1].pid(), b.backends[2].pid(), os.Getpid()}
}

func cpu(pids []int) []int64 {
	out := make([]int64, len(pids))
	for i, p := range pids {
		out[i] = cpuTicks(p)
	}
	return out
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// sticky opens several WebSockets per session ID through the node and asks
// each backend's name: one ID must always land on one backend.
func (b *bench) sticky(ctx context.Context) (string, error) {
	const ids, perID, msgs = 8, 5, 3
	seen := map[string]bool{}
	for i := range ids {
		sid := fmt.Sprintf("sticky-%d", i)
		var got string
		for j := range perID {
			c, br, err := dial(ctx, fmt.Sprintf("ws://%s/ws?session_id=%s", b.proxy, sid), i*perID+j)
			if err != nil {
				return "", err
			}
			var r io.Reader = c
			if br != nil {
				r = br
			}
			rw := struct {
				io.Reader
				io.Writer
			}{r, c}
			for range msgs {
				if err := wsutil.WriteClientText(c, []byte("whoami")); err != nil {
					c.Close()
					return "", err
				}
				p, err := wsutil.ReadServerText(rw)
				if err != nil {
					c.Close()
					return "", err
				}
				if got == "" {
					got = string(p)
				}
				if string(p) != got {
					c.Close()
					return "", fmt.Errorf("FAIL: session %s reached %s and %s", sid, got, p)
				}
			}
			c.Close()
		}
		seen[got] = true
	}
	names := make([]string, 0, len(seen))
	for k := range seen {
		names = append(names, k)
	}
	slices.Sort(names)
	return fmt.Sprintf("ok: %d session ids x %d connections x %d whoami each stayed on one backend; the ids spread over %s",
		ids, perID, msgs, strings.Join(names, ", ")), nil
}

func (b *bench) printTable(d, v idleResult, dr, vr []echoResult, sticky string) {
	o := b.o
	med := func(rs []echoResult, f func(echoResult) float64) float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		slices.Sort(xs)
		if len(xs)%2 == 1 {
			return xs[len(xs)/2]
		}
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	rate := func(e echoResult) float64 { return e.rate() }
	backCPU := func(e echoResult) float64 { return perMsg(e.backendTicks, e.msgs) }
	nodeCPU := func(e echoResult) float64 { return perMsg(e.nodeTicks, e.msgs) }
	selfCPU := func(e echoResult) float64 { return perMsg(e.selfTicks, e.msgs) }

	fmt.Printf("\nmeshlb WebSocket proxy, %s: %d idle; echo %d conns x %d in flight x %d B, %v x %d runs (medians)\n\n",
		o.meshlb, d.n, o.conns, o.inflight, o.size, o.duration, o.runs)
	const rowf = "%-50s %10s %11s %6s\n"
	fmt.Printf(rowf, "figure", "direct", "via meshlb", "ratio")
	row := func(name string, a, b float64) {
		fmt.Printf(rowf, name, num(a), num(b), strconv.FormatFloat(b/a, 'f', 2, 64))
	}
	row("RSS per idle WebSocket (KiB; backend vs node)", d.perConnKiB(), v.perConnKiB())
	row("  of which anonymous memory (KiB)", float64(d.anonAfter-d.anonBefore)/float64(d.n), float64(v.anonAfter-v.anonBefore)/float64(v.n))
	row("  2nd round on the 1st's freed heap (KiB)", d.perConnKiB2(), v.perConnKiB2())
	row("echo throughput (msg/s)", med(dr, rate), med(vr, rate))
	row("backends' CPU per message (µs, 3 backends)", med(dr, backCPU), med(vr, backCPU))
	fmt.Printf(rowf, "node's CPU per message (µs; ratio: to backends')", "-", num(med(vr, nodeCPU)),
		strconv.FormatFloat(med(vr, nodeCPU)/med(vr, backCPU), 'f', 2, 64))
	row("client's CPU per message (µs, this tool)", med(dr, selfCPU), med(vr, selfCPU))

	fmt.Printf("\nper run (msg/s direct | via):")
	for i := range dr {
		fmt.Printf(" %.0f | %.0f;", dr[i].rate(), vr[i].rate())
	}
	fmt.Println()
	fmt.Printf("idle detail: backend RSS %d -> %d KiB (2nd round %d), fds %d -> %d; node RSS %d -> %d KiB (2nd round %d), fds %d -> %d (%.2f per WebSocket),\n",
		d.rssBefore, d.rssAfter, d.rssAfter2, d.fdBefore, d.fdAfter, v.rssBefore, v.rssAfter, v.rssAfter2, v.fdBefore, v.fdAfter, float64(v.fdAfter-v.fdBefore)/float64(v.n))
	fmt.Printf("  node goroutines %.0f -> %.0f (%.2f per WebSocket), heap in use %.1f -> %.1f MiB (%.1f KiB per WebSocket), meshlb_websockets %.0f\n",
		v.goroutinesBefore, v.goroutinesAfter, (v.goroutinesAfter-v.goroutinesBefore)/float64(v.n),
		v.heapBefore/(1<<20), v.heapAfter/(1<<20), (v.heapAfter-v.heapBefore)/1024/float64(v.n), v.wsOpen)
	fmt.Printf("  opening %d took %v direct, %v via meshlb\n", d.n, d.open.Round(time.Millisecond), v.open.Round(time.Millisecond))
	fmt.Printf("sticky: %s\n", sticky)
}

func num(x float64) string {
	switch {
	case x >= 1000:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}

// metrics reads the node's /metrics into name → value for unlabelled
// series.
func (b *bench) metrics() (map[string]float64, error) {
	resp, err := http.Get("http://" + b.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

func httpStatus(url string) (int, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// freePort returns a loopback host:port that was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// raiseNofile lifts this process's open-file limit to its hard limit.
func raiseNofile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	return l.Cur, nil
}

// rss returns VmRSS and RssAnon of pid in KiB.
func rss(pid int) (vm, anon int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(data)) {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			vm = n
		case "RssAnon":
			anon = n
		}
	}
	return vm, anon
}

// cpuTicks returns utime+stime of pid in USER_HZ ticks.
func cpuTicks(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}
