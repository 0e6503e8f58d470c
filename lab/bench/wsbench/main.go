//go:build linux

// Command wsbench measures meshlb's WebSocket proxy on this machine: what an
// idle proxied WebSocket costs a node in memory, and echo throughput and CPU
// per message through a node against going straight to the backends.
//
// It builds nothing. It runs an existing meshlb binary as 3 echo backends and
// one node on loopback, drives them from this process, prints a table and
// stops them:
//
//	go build -o bin/meshlb ./cmd/meshlb && go run ./lab/bench/wsbench
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
	"context"
	"encoding/json"
	"flag"
	"fmt"
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

	"github.com/meshlb/meshlb/lab/internal/wsload"
)

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
	limit, err := wsload.RaiseNofile()
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
		conns, err := wsload.OpenMany(ctx, 200, u)
		wsload.CloseAll(conns)
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	time.Sleep(time.Second)

	// Each side twice: the first round lands on fresh pages, of which Go
	// leaves untouched what no one wrote; the second on the heap the first
	// freed, which Go zeroes on reuse, as in a node that has run a while.
	direct, err := b.idleTwice(ctx, b.backends[0], func(int) func(int) string { return b.directURL(0) }, false)
	if err != nil {
		return fmt.Errorf("idle direct: %w", err)
	}
	via, err := b.idleTwice(ctx, b.node, func(round int) func(int) string { return b.proxyURL(fmt.Sprintf("idle%d", round)) }, true)
	if err != nil {
		return fmt.Errorf("idle via meshlb: %w", err)
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
	*wsload.Proc
	addr   string      // an echo backend's listen address
	killed atomic.Bool // we signalled it
}

// state is how the process ended, once Exited is closed.
func (p *proc) state() *os.ProcessState { return p.Cmd.ProcessState }

// start runs meshlb with args. Its stderr is scanned: the first JSON line
// whose message is startedMsg (if not empty) is returned; every other line
// is copied to our stderr, and a warn or error line is a problem.
func (b *bench) start(ctx context.Context, name, startedMsg string, args ...string) (*proc, map[string]any, error) {
	cmd := exec.Command(b.o.meshlb, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, nil, err
	}
	p := &proc{}
	scanDone := make(chan struct{})
	p.Proc, err = wsload.Start(name, cmd, func() {
		<-scanDone // Wait closes the pipe; read it all first
		_ = cmd.Wait()
		if !p.killed.Load() {
			b.problem("%s exited on its own: %v", name, cmd.ProcessState)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	started := make(chan map[string]any, 1)
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
	if startedMsg == "" {
		return p, nil, nil
	}
	select {
	case m := <-started:
		return p, m, nil
	case <-p.Exited:
		return nil, nil, fmt.Errorf("%s exited at start: %v", name, p.state())
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
		p.Name, p.addr = id+"@"+addr, addr
		backendArgs = append(backendArgs, "--backend", id+"="+addr)
	}
	// At --log-level warn the node does not log "node started" (an info
	// line), so its ports are picked here and readiness comes from /readyz.
	proxy, err := wsload.FreePort()
	if err != nil {
		return err
	}
	admin, err := wsload.FreePort()
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
		ok, code, _ := wsload.Ready(admin, 3)
		if ok {
			break
		}
		select {
		case <-b.node.Exited:
			return fmt.Errorf("node exited at start: %v", b.node.state())
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

// stopAll sends SIGTERM to every process, the node first (backends that
// stop under a running node are rightly logged as out of its ring, which
// is no problem of the node's), waits, and checks they exited 0.
func (b *bench) stopAll() {
	b.stop([]*proc{b.node})
	b.stop(b.backends)
}

func (b *bench) stop(procs []*proc) {
	var all []*proc
	var ps []*wsload.Proc
	for _, p := range procs {
		if p != nil {
			p.killed.Store(true)
			all, ps = append(all, p), append(ps, p.Proc)
		}
	}
	killed := wsload.Stop(ps)
	for _, p := range all {
		if slices.Contains(killed, p.Proc) {
			b.problem("%s did not stop within 40s of SIGTERM; killed", p.Name)
		} else if !p.state().Success() {
			b.problem("%s exit after SIGTERM: %v", p.Name, p.state())
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
		case <-p.Exited:
			return fmt.Errorf("%s exited: %v", p.Name, p.state())
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
	wsload.Settle(p.Pid())
	r.rssBefore, r.anonBefore = wsload.RSS(p.Pid())
	r.fdBefore = fdCount(p.Pid())
	if isNode {
		m, _ := wsload.Metrics(b.admin)
		r.goroutinesBefore, r.heapBefore = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]
	}
	logf("idle %s: opening %d WebSockets (RSS before %d KiB, %d fds)", p.Name, n, r.rssBefore, r.fdBefore)
	t0 := time.Now()
	conns, err := wsload.OpenMany(ctx, n, url)
	r.open = time.Since(t0)
	defer func() {
		wsload.CloseAll(conns)
		b.waitReleased(p, r.fdBefore, r.goroutinesBefore)
	}()
	if err != nil {
		return r, fmt.Errorf("opened %d of %d: %w", len(conns), n, err)
	}
	r.n = len(conns)
	time.Sleep(2 * time.Second)
	wsload.Settle(p.Pid())
	r.rssAfter, r.anonAfter = wsload.RSS(p.Pid())
	r.fdAfter = fdCount(p.Pid())
	if isNode {
		m, _ := wsload.Metrics(b.admin)
		r.goroutinesAfter, r.heapAfter, r.wsOpen = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"], m["meshlb_websockets"]
		if int(r.wsOpen) != n {
			b.problem("node reports meshlb_websockets %v with %d open", r.wsOpen, n)
		}
	}
	logf("idle %s: %d open in %v; RSS after %d KiB (%+.1f KiB each), %d fds", p.Name, n, r.open.Round(time.Millisecond), r.rssAfter, r.perConnKiB(), r.fdAfter)
	if err := b.alive(); err != nil {
		return r, err
	}
	return r, nil
}

// idleTwice runs idle twice against p (url(round) for each round): the
// first round's figures, with the second round's RSS as rssAfter2.
func (b *bench) idleTwice(ctx context.Context, p *proc, url func(round int) func(int) string, isNode bool) (idleResult, error) {
	var r idleResult
	for round := range 2 {
		x, err := b.idle(ctx, p, url(round), isNode)
		if err != nil {
			return r, err
		}
		if round == 0 {
			r = x
		} else {
			r.rssAfter2 = x.rssAfter
		}
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
		fds := fdCount(p.Pid())
		var ws, gr float64
		if isNode {
			m, _ := wsload.Metrics(b.admin)
			ws, gr = m["meshlb_websockets"], m["go_goroutines"]
		}
		if fds <= fdBefore+5 && ws == 0 && gr <= goroutinesBefore+5 {
			return
		}
		if time.Now().After(deadline) {
			b.problem("%s still holds %d fds (baseline %d), %v WebSockets, %v goroutines (baseline %v) 30s after the client closed all",
				p.Name, fds, fdBefore, ws, gr, goroutinesBefore)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// echoResult is one throughput run.
type echoResult struct {
	msgs                               int64
	secs                               float64
	nodeTicks, backendTicks, selfTicks int64
}

func (e echoResult) rate() float64 { return float64(e.msgs) / e.secs }

// perMsg is µs of CPU per message.
func (e echoResult) perMsg(ticks int64) float64 { return wsload.PerMsg(ticks, float64(e.msgs)) }

// echo runs one throughput test, direct to the backends or via the node.
func (b *bench) echo(ctx context.Context, run int, viaNode bool) (echoResult, error) {
	o := b.o
	what := "direct"
	url := func(i int) string { return b.directURL(i % len(b.backends))(i) }
	if viaNode {
		what = "via meshlb"
		url = b.proxyURL(fmt.Sprintf("tp%d", run))
	}
	nodeFDs := fdCount(b.node.Pid())
	m, _ := wsload.Metrics(b.admin)
	nodeGoroutines := m["go_goroutines"]
	conns, err := wsload.DialConns(ctx, o.conns, url)
	if err != nil {
		return echoResult{}, fmt.Errorf("%s: %w", what, err)
	}
	load := wsload.StartEcho(conns, o.inflight, o.size)
	sleepCtx(ctx, o.warmup)
	m0, t0, c0 := load.Count(), time.Now(), b.cpu()
	sleepCtx(ctx, o.duration)
	m1, t1, c1 := load.Count(), time.Now(), b.cpu()
	bad, err := load.Stop()

	if err := ctx.Err(); err != nil {
		return echoResult{}, err
	}
	if err != nil {
		b.problem("echo %s run %d: %v", what, run+1, err)
	}
	if bad > 0 {
		b.problem("echo %s run %d: %d messages came back wrong", what, run+1, bad)
	}
	if err := b.alive(); err != nil {
		return echoResult{}, err
	}
	e := echoResult{
		msgs:         m1 - m0,
		secs:         t1.Sub(t0).Seconds(),
		nodeTicks:    c1[0] - c0[0],
		backendTicks: c1[1] - c0[1],
		selfTicks:    c1[2] - c0[2],
	}
	if e.msgs == 0 {
		return e, fmt.Errorf("%s: no message echoed", what)
	}
	logf("echo run %d %-10s %9.0f msg/s; CPU µs/msg: node %.2f, backends %.2f, client %.2f",
		run+1, what, e.rate(), e.perMsg(e.nodeTicks), e.perMsg(e.backendTicks), e.perMsg(e.selfTicks))
	if viaNode {
		// Every proxied WebSocket of the run must be gone again.
		b.waitReleased(b.node, nodeFDs, nodeGoroutines)
	}
	return e, nil
}

// cpu reads the CPU ticks of the node, of the 3 backends together and of
// this process.
func (b *bench) cpu() [3]int64 {
	var backends []int
	for _, p := range b.backends {
		backends = append(backends, p.Pid())
	}
	return [3]int64{wsload.CPUTicks(b.node.Pid()), wsload.CPUTicks(backends...), wsload.CPUTicks(os.Getpid())}
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
		got, err := wsload.Sticky(ctx, fmt.Sprintf("sticky-%d", i), []string{b.proxy}, perID, msgs, func(_, j int) int { return i*perID + j })
		if err != nil {
			return "", err
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
		return wsload.Median(xs)
	}
	rate := func(e echoResult) float64 { return e.rate() }
	backCPU := func(e echoResult) float64 { return e.perMsg(e.backendTicks) }
	nodeCPU := func(e echoResult) float64 { return e.perMsg(e.nodeTicks) }
	selfCPU := func(e echoResult) float64 { return e.perMsg(e.selfTicks) }

	fmt.Printf("\nmeshlb WebSocket proxy, %s: %d idle; echo %d conns x %d in flight x %d B, %v x %d runs (medians)\n\n",
		o.meshlb, d.n, o.conns, o.inflight, o.size, o.duration, o.runs)
	const rowf = "%-50s %10s %11s %6s\n"
	fmt.Printf(rowf, "figure", "direct", "via meshlb", "ratio")
	row := func(name string, a, b float64) {
		fmt.Printf(rowf, name, wsload.Num(a), wsload.Num(b), strconv.FormatFloat(b/a, 'f', 2, 64))
	}
	row("RSS per idle WebSocket (KiB; backend vs node)", d.perConnKiB(), v.perConnKiB())
	row("  of which anonymous memory (KiB)", float64(d.anonAfter-d.anonBefore)/float64(d.n), float64(v.anonAfter-v.anonBefore)/float64(v.n))
	row("  2nd round on the 1st's freed heap (KiB)", d.perConnKiB2(), v.perConnKiB2())
	row("echo throughput (msg/s)", med(dr, rate), med(vr, rate))
	row("backends' CPU per message (µs, 3 backends)", med(dr, backCPU), med(vr, backCPU))
	fmt.Printf(rowf, "node's CPU per message (µs; ratio: to backends')", "-", wsload.Num(med(vr, nodeCPU)),
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

func fdCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}
