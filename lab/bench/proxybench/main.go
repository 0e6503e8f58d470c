//go:build linux

// Command proxybench puts meshlb beside HAProxy and NGINX on this machine,
// in front of the same 3 echo backends, and measures each against going
// straight to the backends:
//
//   - RSS per idle proxied WebSocket: --idle WebSockets opened through the
//     proxy and left idle; (RSS after - RSS before) / --idle, summed over
//     the proxy's processes (NGINX's master and workers). Direct: the
//     backend's own cost, for scale. Measured first in every repetition,
//     on freshly started processes: one that served load before keeps the
//     memory it freed and hands it to new connections, which read as ~0
//     or negative.
//   - Echo throughput: --conns WebSockets each keeping --inflight messages
//     of --size bytes in flight; messages/s, and the proxy's CPU
//     (utime+stime) per message against the backends' CPU per message.
//   - Handshakes/s: --handshakes fresh WebSockets, --hs-conc at a time,
//     each opened (upgrade answered) and closed; and the proxy's and the
//     backends' CPU per handshake, read once the closes are torn down.
//   - Echo latency: --lat-conns WebSockets each with one message in
//     flight; p50 and p99 of the round trip, and the proxy's and the
//     backends' CPU per round trip.
//   - Stickiness: one session_id reaches one backend on every proxy, and
//     on all three meshlb nodes.
//   - System calls per handshake: after the runs, --strace handshakes
//     with strace -f -c attached to each proxy (strace.go); a count, not
//     a rate, since strace slows the proxy down.
//   - The reconnect storm (storm.go, after the runs, once): --storm
//     WebSockets over a fresh 3-node mesh, kill -9 of one node, and the
//     time until its clients are back on their own backends through the
//     others; beside it the same reconnects arriving at once at HAProxy,
//     at NGINX and at one meshlb node. --storm-only runs it alone.
//
// Each figure also gets meshlb's ratio to the best of HAProxy and NGINX.
//
// Targets run interleaved (direct, haproxy, nginx, meshlb, then rotated)
// --runs times; medians are printed. Client sockets come from
// 127.0.0.2..127.0.0.254 so that no source address runs out of ports.
// HAProxy: balance url_param session_id, hash-type consistent. NGINX: hash
// $arg_session_id consistent, Upgrade and Connection forwarded. meshlb: a
// 3-node mesh with the backends static; the load goes to one node.
//
//	go build -o bin/meshlb ./cmd/meshlb && go run ./lab/bench/proxybench
//
// Client, proxies and backends share the machine's cores: compare ratios.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshlb/meshlb/lab/internal/wsload"
)

// ctx is the context of every dial: the bench runs to its end.
var ctx = context.Background()

type options struct {
	meshlb     string
	idle       int
	conns      int
	inflight   int
	size       int
	duration   time.Duration
	warmup     time.Duration
	handshakes int
	hsConc     int
	latConns   int
	latDur     time.Duration
	runs       int
	only       string
	// tls: "on" adds the TLS rows (tls.go) after the others, "only"
	// runs them alone, "off" leaves them out.
	tls           string
	tlsHandshakes int
	// straceHS is the number of handshakes counted under strace -f -c
	// after the runs (0: none).
	straceHS int
	// storm is the reconnect storm's sessions (storm.go; 0: none).
	storm     int
	stormOnly bool
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "storm-client" {
		os.Exit(stormClientMain(os.Args[2:]))
	}
	var o options
	flag.StringVar(&o.meshlb, "meshlb", "bin/meshlb", "meshlb binary (build it first)")
	flag.IntVar(&o.idle, "idle", 9000, "idle WebSockets for the RSS figure")
	flag.IntVar(&o.conns, "conns", 64, "WebSockets in the throughput test")
	flag.IntVar(&o.inflight, "inflight", 8, "messages in flight per WebSocket")
	flag.IntVar(&o.size, "size", 64, "message size in bytes")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "measured window of one throughput run")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured traffic before each window")
	flag.IntVar(&o.handshakes, "handshakes", 2000, "fresh WebSockets per handshake run")
	flag.IntVar(&o.hsConc, "hs-conc", 100, "handshakes at a time")
	flag.IntVar(&o.latConns, "lat-conns", 100, "WebSockets in the latency test, one message in flight each")
	flag.DurationVar(&o.latDur, "lat-duration", 4*time.Second, "measured window of one latency run")
	flag.IntVar(&o.runs, "runs", 3, "repetitions, interleaved")
	flag.StringVar(&o.only, "only", "", "comma-separated targets to run besides direct (haproxy,nginx,meshlb); default all")
	flag.StringVar(&o.tls, "tls", "on", "TLS rows beside HAProxy: on (after the others), only, or off")
	flag.IntVar(&o.tlsHandshakes, "tls-handshakes", 1000, "handshakes per TLS handshake run (full, and resumed)")
	flag.IntVar(&o.straceHS, "strace", 500, "handshakes whose system calls strace -c counts per proxy after the runs (0: none)")
	flag.IntVar(&o.storm, "storm", 30000, "WebSockets of the reconnect storm over a 3-node mesh, n0 killed; the peers get a burst of a third of them (0: no storm)")
	flag.BoolVar(&o.stormOnly, "storm-only", false, "run only the reconnect storm")
	flag.Parse()
	if o.stormOnly && o.storm < 6 {
		fmt.Fprintln(os.Stderr, "proxybench: --storm-only wants --storm >= 6")
		os.Exit(2)
	}
	if o.runs < 1 || o.idle < 1 || o.conns < 1 || o.inflight < 1 || o.handshakes < 1 || o.hsConc < 1 || o.latConns < 1 {
		fmt.Fprintln(os.Stderr, "proxybench: counts must be >= 1")
		os.Exit(2)
	}
	b := &bench{o: o}
	var err error
	switch o.tls {
	case "only":
		err = b.runTLS()
	case "on":
		if err = b.run(); err == nil && !o.stormOnly {
			err = b.runTLS()
		}
	case "off":
		err = b.run()
	default:
		fmt.Fprintln(os.Stderr, "proxybench: --tls wants on, only or off")
		os.Exit(2)
	}
	b.stopAll()
	if err != nil {
		fmt.Fprintf(os.Stderr, "proxybench: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "proxybench: "+format+"\n", args...)
}

// target is one way to reach the backends.
type target struct {
	name  string
	addr  string         // host:port the client dials
	procs []*wsload.Proc // the proxy's measured processes (none for direct)
	owned []*wsload.Proc // every process started for it, stopped on restart
	extra []string       // other nodes of the mesh, for the stickiness check
	res   []result       // one per run
	sys   *syscallCount  // system calls per handshake, if counted
}

// result is one run's figures of one target.
type result struct {
	idleKiB      float64
	msgs         float64 // msg/s
	proxyCPU     float64 // µs per message
	backendCPU   float64 // µs per message
	hsRate       float64 // handshakes/s
	hsProxyCPU   float64 // µs per handshake
	hsBackendCPU float64 // µs per handshake
	p50, p99     float64 // µs
	rtProxyCPU   float64 // µs per round trip in the latency test
	rtBackendCPU float64 // µs per round trip in the latency test
	idleOpenSecs float64
}

type bench struct {
	o         options
	dir       string
	backends  []string // host:port
	bprocs    []*wsload.Proc
	all       []*wsload.Proc
	targets   []*target
	storm     []stormResult
	stormNote string // why the storm has fewer sessions than asked
}

func (b *bench) run() error {
	limit, err := wsload.RaiseNofile()
	if err != nil {
		return err
	}
	if need := 2*b.o.idle + 300; uint64(need) > limit {
		return fmt.Errorf("RLIMIT_NOFILE %d: a proxy needs 2 fds per idle WebSocket; lower --idle", limit)
	}
	if _, err := os.Stat(b.o.meshlb); err != nil {
		return fmt.Errorf("%v (build it: go build -o bin/meshlb ./cmd/meshlb)", err)
	}
	b.dir, err = os.MkdirTemp("", "proxybench")
	if err != nil {
		return err
	}
	if err := b.startBackends(); err != nil {
		return err
	}
	b.targets = append(b.targets, &target{name: "direct"})
	want := func(n string) bool { return b.o.only == "" || slices.Contains(strings.Split(b.o.only, ","), n) }
	if want("haproxy") {
		t, err := b.startHAProxy()
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}
	if want("nginx") {
		t, err := b.startNGINX()
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}
	if want("meshlb") {
		t, err := b.startMesh()
		if err != nil {
			return err
		}
		b.targets = append(b.targets, t)
	}
	sticky := b.stickyAll()
	if b.o.stormOnly {
		err := b.runStorm()
		b.printStorm()
		return err
	}

	// Warm every path up so code is paged in before baselines are read.
	for _, t := range b.targets {
		conns, err := wsload.OpenMany(ctx, 200, b.url(t, "warm"))
		wsload.CloseAll(conns)
		if err != nil {
			return fmt.Errorf("%s warm-up: %w", t.name, err)
		}
	}
	time.Sleep(time.Second)

	n := len(b.targets)
	for r := range b.o.runs {
		// Idle memory first, each figure in processes that served nothing
		// yet: the direct one before any proxy holds a backend connection,
		// each proxy started afresh right before its own.
		for _, t := range b.targets[1:] {
			wsload.Stop(t.owned)
		}
		if err := b.restartBackends(); err != nil {
			return fmt.Errorf("run %d: %w", r+1, err)
		}
		idle := make([]result, n)
		for i := range n {
			k := i
			if i > 0 {
				k = 1 + (i-1+r)%(n-1) // rotate the proxies
			}
			t := b.targets[k]
			if k > 0 {
				if err := b.restart(t); err != nil {
					return fmt.Errorf("%s run %d: %w", t.name, r+1, err)
				}
			}
			var err error
			if idle[k].idleKiB, idle[k].idleOpenSecs, err = b.idle(t, r); err != nil {
				return fmt.Errorf("%s run %d: idle: %w", t.name, r+1, err)
			}
		}
		for i := range n {
			k := (i + r) % n // rotate: a drift hits every target alike
			t := b.targets[k]
			res, err := b.measure(t, r, idle[k])
			if err != nil {
				return fmt.Errorf("%s run %d: %w", t.name, r+1, err)
			}
			t.res = append(t.res, res)
		}
	}
	if b.o.straceHS > 0 {
		for _, t := range b.targets[1:] {
			sc, err := b.straceHandshakes(t, b.o.straceHS)
			if err != nil {
				logf("%s: no system call count: %v", t.name, err)
				continue
			}
			t.sys = &sc
		}
	}
	if b.o.storm > 0 {
		if err := b.runStorm(); err != nil {
			b.print(sticky)
			return err
		}
	}
	b.print(sticky)
	b.printStorm()
	return nil
}

// measure runs every figure but the idle one (given) once against t.
func (b *bench) measure(t *target, run int, idle result) (result, error) {
	r := idle
	var err error
	if r.msgs, r.proxyCPU, r.backendCPU, err = b.echo(t, run); err != nil {
		return r, fmt.Errorf("echo: %w", err)
	}
	if r.hsRate, r.hsProxyCPU, r.hsBackendCPU, err = b.handshakes(t, run); err != nil {
		return r, fmt.Errorf("handshakes: %w", err)
	}
	if r.p50, r.p99, r.rtProxyCPU, r.rtBackendCPU, err = b.latency(t, run); err != nil {
		return r, fmt.Errorf("latency: %w", err)
	}
	logf("run %d %-7s idle %.2f KiB/ws; %.0f msg/s, CPU µs/msg proxy %.2f backends %.2f; %.0f handshakes/s; p50 %.0f µs p99 %.0f µs",
		run+1, t.name, r.idleKiB, r.msgs, r.proxyCPU, r.backendCPU, r.hsRate, r.p50, r.p99)
	return r, nil
}

// url returns the URL of the k-th WebSocket of a test to t. Direct
// connections go to the backend the session would have, spread evenly.
func (b *bench) url(t *target, prefix string) func(int) string {
	if t.name == "direct" {
		return func(k int) string {
			return fmt.Sprintf("ws://%s/ws?session_id=%s-%d", b.backends[k%len(b.backends)], prefix, k)
		}
	}
	return func(k int) string { return fmt.Sprintf("ws://%s/ws?session_id=%s-%d", t.addr, prefix, k) }
}

// measured are the processes whose memory and CPU count for t.
func (b *bench) measured(t *target) []*wsload.Proc {
	if t.name == "direct" {
		return b.bprocs
	}
	return t.procs
}

func (b *bench) idle(t *target, run int) (perConn, openSecs float64, err error) {
	pids := wsload.Pids(b.measured(t))
	// A few connections first, so that code and the runtime's first
	// arenas are paged in before the baseline; they leave at most a few
	// dozen connections' worth of freed memory behind.
	warm, err := wsload.OpenMany(ctx, 32, b.url(t, fmt.Sprintf("warm%d", run)))
	wsload.CloseAll(warm)
	if err != nil {
		return 0, 0, fmt.Errorf("warm-up: %w", err)
	}
	wsload.Settle(pids...)
	before := wsload.VmRSS(pids...)
	t0 := time.Now()
	conns, err := wsload.OpenMany(ctx, b.o.idle, b.url(t, fmt.Sprintf("idle%d", run)))
	openSecs = time.Since(t0).Seconds()
	defer func() {
		wsload.CloseAll(conns)
		time.Sleep(time.Second) // let the proxy tear them down before the next test
	}()
	if err != nil {
		return 0, 0, fmt.Errorf("opened %d of %d: %w", len(conns), b.o.idle, err)
	}
	time.Sleep(2 * time.Second)
	wsload.Settle(pids...)
	after := wsload.VmRSS(pids...)
	return float64(after-before) / float64(len(conns)), openSecs, nil
}

func (b *bench) echo(t *target, run int) (rate, proxyCPU, backendCPU float64, err error) {
	o := b.o
	conns, err := wsload.DialConns(ctx, o.conns, b.url(t, fmt.Sprintf("tp%d", run)))
	if err != nil {
		return 0, 0, 0, err
	}
	proxy, backends := wsload.Pids(t.procs), wsload.Pids(b.bprocs)
	e := wsload.StartEcho(conns, o.inflight, o.size)
	time.Sleep(o.warmup)
	m0, t0, p0, b0 := e.Count(), time.Now(), wsload.CPUTicks(proxy...), wsload.CPUTicks(backends...)
	time.Sleep(o.duration)
	m1, t1, p1, b1 := e.Count(), time.Now(), wsload.CPUTicks(proxy...), wsload.CPUTicks(backends...)
	bad, err := e.Stop()
	if err != nil {
		return 0, 0, 0, err
	}
	if bad > 0 {
		return 0, 0, 0, fmt.Errorf("%d messages came back wrong", bad)
	}
	msgs := float64(m1 - m0)
	if msgs == 0 {
		return 0, 0, 0, fmt.Errorf("no message echoed")
	}
	time.Sleep(500 * time.Millisecond)
	return msgs / t1.Sub(t0).Seconds(), wsload.PerMsg(p1-p0, msgs), wsload.PerMsg(b1-b0, msgs), nil
}

func (b *bench) handshakes(t *target, run int) (rate, proxyCPU, backendCPU float64, err error) {
	url := b.url(t, fmt.Sprintf("hs%d", run))
	proxy, backends := wsload.Pids(t.procs), wsload.Pids(b.bprocs)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	n := b.o.handshakes
	p0, b0 := wsload.CPUTicks(proxy...), wsload.CPUTicks(backends...)
	t0 := time.Now()
	for range b.o.hsConc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, _, err := wsload.Dial(ctx, url(i), i)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	if e, _ := firstErr.Load().(error); e != nil {
		return 0, 0, 0, e
	}
	// The closes the load made are still being torn down: CPU is read
	// once they are done, and covers a handshake's whole life.
	time.Sleep(500 * time.Millisecond)
	p1, b1 := wsload.CPUTicks(proxy...), wsload.CPUTicks(backends...)
	return float64(n) / el.Seconds(), wsload.PerMsg(p1-p0, float64(n)), wsload.PerMsg(b1-b0, float64(n)), nil
}

func (b *bench) latency(t *target, run int) (p50, p99, proxyCPU, backendCPU float64, err error) {
	conns, err := wsload.DialConns(ctx, b.o.latConns, b.url(t, fmt.Sprintf("lat%d", run)))
	if err != nil {
		return 0, 0, 0, 0, err
	}
	proxy, backends := wsload.Pids(t.procs), wsload.Pids(b.bprocs)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	payload := make([]byte, b.o.size)
	frame := ws.MustCompileFrame(ws.MaskFrameWith(ws.NewBinaryFrame(payload), ws.NewMask()))
	var mu sync.Mutex
	var samples []float64
	var firstErr atomic.Value
	start := time.Now()
	warmEnd := start.Add(b.o.warmup)
	end := warmEnd.Add(b.o.latDur)
	var p0, b0 int64
	read := make(chan struct{})
	cpuAt := time.AfterFunc(b.o.warmup, func() {
		p0, b0 = wsload.CPUTicks(proxy...), wsload.CPUTicks(backends...)
		close(read)
	})
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			var mine []float64
			buf := make([]byte, b.o.size)
			for {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				if _, err := c.Write(frame); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				h, err := ws.ReadHeader(c.R)
				if err == nil {
					_, err = io.ReadFull(c.R, buf[:h.Length])
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if t0.After(warmEnd) {
					mine = append(mine, float64(time.Since(t0).Microseconds()))
				}
			}
			mu.Lock()
			samples = append(samples, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	p1, b1 := wsload.CPUTicks(proxy...), wsload.CPUTicks(backends...)
	if cpuAt.Stop() {
		return 0, 0, 0, 0, fmt.Errorf("the load ended within its warm-up")
	}
	<-read
	if e, _ := firstErr.Load().(error); e != nil {
		return 0, 0, 0, 0, e
	}
	if len(samples) == 0 {
		return 0, 0, 0, 0, fmt.Errorf("no sample")
	}
	slices.Sort(samples)
	q := func(f float64) float64 { return samples[min(len(samples)-1, int(f*float64(len(samples))))] }
	n := float64(len(samples))
	return q(0.50), q(0.99), wsload.PerMsg(p1-p0, n), wsload.PerMsg(b1-b0, n), nil
}

// stickyAll checks, for every proxy, that one session_id reaches one
// backend over several connections; for meshlb, through every node.
func (b *bench) stickyAll() string {
	var out []string
	for _, t := range b.targets {
		if t.name == "direct" {
			continue
		}
		addrs := append([]string{t.addr}, t.extra...)
		res, err := sticky(addrs)
		if err != nil {
			out = append(out, fmt.Sprintf("%s FAIL: %v", t.name, err))
			continue
		}
		out = append(out, fmt.Sprintf("%s ok (%s)", t.name, res))
	}
	return strings.Join(out, "; ")
}

func sticky(addrs []string) (string, error) {
	const ids, perAddr = 12, 3
	seen := map[string]int{}
	for i := range ids {
		got, err := wsload.Sticky(ctx, fmt.Sprintf("sticky-%d", i), addrs, perAddr, 1, func(a, k int) int { return i*17 + a*3 + k })
		if err != nil {
			return "", err
		}
		seen[got]++
	}
	return fmt.Sprintf("%d ids x %d nodes x %d conns, spread %v", ids, len(addrs), perAddr, seen), nil
}

// --- processes ---

func (b *bench) start(name string, stdout io.Writer, bin string, args ...string) (*wsload.Proc, error) {
	cmd := exec.Command(bin, args...)
	logFile, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logFile
	cmd.Stdout = logFile
	if stdout != nil {
		cmd.Stdout = stdout
	}
	p, err := wsload.Start(name, cmd, func() {
		_ = cmd.Wait()
		logFile.Close()
	})
	if err != nil {
		logFile.Close()
		return nil, err
	}
	b.all = append(b.all, p)
	return p, nil
}

func (b *bench) stopAll() {
	wsload.Stop(b.all)
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// restartBackends replaces the echo backends (if any run) with fresh
// processes on the same addresses; the proxies are stopped meanwhile.
func (b *bench) restartBackends() error {
	wsload.Stop(b.bprocs)
	b.bprocs = b.bprocs[:0]
	for i, addr := range b.backends {
		id := fmt.Sprintf("web-%d", i+1)
		p, err := b.start(id, nil, b.o.meshlb, "echo", "--listen", addr, "--id", id)
		if err != nil {
			return err
		}
		b.bprocs = append(b.bprocs, p)
	}
	for _, a := range b.backends {
		if err := waitWS(a); err != nil {
			return fmt.Errorf("echo backend %s: %w", a, err)
		}
	}
	return nil
}

// restart replaces t's processes with fresh ones; its results stay.
func (b *bench) restart(t *target) error {
	wsload.Stop(t.owned)
	var nt *target
	var err error
	switch t.name {
	case "haproxy":
		nt, err = b.startHAProxy()
	case "nginx":
		nt, err = b.startNGINX()
	case "meshlb":
		nt, err = b.startMesh()
	default:
		return fmt.Errorf("cannot restart %s", t.name)
	}
	if err != nil {
		return err
	}
	t.addr, t.procs, t.owned, t.extra = nt.addr, nt.procs, nt.owned, nt.extra
	return nil
}

// startBackends starts the 3 echo backends on free ports.
func (b *bench) startBackends() error {
	for len(b.backends) < 3 {
		addr, err := wsload.FreePort()
		if err != nil {
			return err
		}
		if !slices.Contains(b.backends, addr) {
			b.backends = append(b.backends, addr)
		}
	}
	return b.restartBackends()
}

func (b *bench) startHAProxy() (*target, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, fmt.Errorf("haproxy not installed (make bench installs it): %w", err)
	}
	addr, err := wsload.FreePort()
	if err != nil {
		return nil, err
	}
	var servers strings.Builder
	for i, a := range b.backends {
		fmt.Fprintf(&servers, "    server web-%d %s\n", i+1, a)
	}
	// Room for the storm's burst (storm.go) where the limit allows it.
	maxconn, fds := b.proxyLimits()
	cfg := fmt.Sprintf(`global
    maxconn %d
    ulimit-n %d
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
frontend fe
    bind %s
    default_backend be
backend be
    balance url_param session_id
    hash-type consistent
%s`, maxconn, fds, addr, servers.String())
	path := filepath.Join(b.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := b.start("haproxy", nil, bin, "-db", "-f", path)
	if err != nil {
		return nil, err
	}
	if err := waitWS(addr); err != nil {
		return nil, fmt.Errorf("haproxy: %w (log %s)", err, filepath.Join(b.dir, "haproxy.log"))
	}
	return &target{name: "haproxy", addr: addr, procs: []*wsload.Proc{p}, owned: []*wsload.Proc{p}}, nil
}

// proxyLimits are HAProxy's maxconn and the proxies' open-file limit:
// 9,900 connections and 20,000 files, more if the storm's burst needs
// them and this process's limit allows.
func (b *bench) proxyLimits() (maxconn, fds int) {
	maxconn = max(9900, b.o.storm/3+1000)
	fds = 2*maxconn + 200
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && uint64(fds) > l.Cur {
		fds = int(l.Cur)
		maxconn = min(maxconn, (fds-200)/2)
	}
	return maxconn, fds
}

func (b *bench) startNGINX() (*target, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, fmt.Errorf("nginx not installed (make bench installs it): %w", err)
	}
	addr, err := wsload.FreePort()
	if err != nil {
		return nil, err
	}
	var servers strings.Builder
	for _, a := range b.backends {
		fmt.Fprintf(&servers, "        server %s;\n", a)
	}
	_, fds := b.proxyLimits()
	cfg := fmt.Sprintf(`daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile %[4]d;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections %[5]d; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream be {
        hash $arg_session_id consistent;
%[2]s    }
    server {
        listen %[3]s;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
`, b.dir, servers.String(), addr, fds, fds-500)
	if os.Geteuid() == 0 {
		cfg = "user root;\n" + cfg
	}
	path := filepath.Join(b.dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := b.start("nginx", nil, bin, "-c", path, "-p", b.dir)
	if err != nil {
		return nil, err
	}
	if err := waitWS(addr); err != nil {
		return nil, fmt.Errorf("nginx: %w (log %s)", err, filepath.Join(b.dir, "nginx-error.log"))
	}
	// Its workers are children of the master: count them too.
	t := &target{name: "nginx", addr: addr, procs: []*wsload.Proc{p}, owned: []*wsload.Proc{p}}
	for _, pid := range children(p.Pid()) {
		t.procs = append(t.procs, &wsload.Proc{Name: "nginx worker", Cmd: &exec.Cmd{Process: &os.Process{Pid: pid}}})
	}
	logf("nginx: master and %d workers", len(t.procs)-1)
	return t, nil
}

func (b *bench) startMesh() (*target, error) {
	var backendArgs []string
	for i, a := range b.backends {
		backendArgs = append(backendArgs, "--backend", fmt.Sprintf("web-%d=%s", i+1, a))
	}
	var addrs []string
	var first string
	var t *target
	for i := range 3 {
		proxy, err1 := wsload.FreePort()
		admin, err2 := wsload.FreePort()
		gossip, err3 := wsload.FreePort()
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("free ports: %v %v %v", err1, err2, err3)
		}
		args := []string{"node", "--name", fmt.Sprintf("n%d", i), "--gossip-addr", gossip,
			"--listen", proxy, "--admin", admin, "--log-level", "warn", "--drain-delay", "0"}
		if first != "" {
			args = append(args, "--join", first)
		} else {
			first = gossip
		}
		args = append(args, backendArgs...)
		p, err := b.start(fmt.Sprintf("meshlb-n%d", i), nil, b.o.meshlb, args...)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			t = &target{name: "meshlb", addr: proxy, procs: []*wsload.Proc{p}}
		} else {
			t.extra = append(t.extra, proxy)
		}
		t.owned = append(t.owned, p)
		addrs = append(addrs, admin)
	}
	for _, admin := range addrs {
		// Generous: the machine is shared, and a busy one delays the
		// first gossip sync.
		deadline := time.Now().Add(90 * time.Second)
		for {
			ok, code, n := wsload.Ready(admin, 3)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("meshlb node at admin %s not ready with 3 backends in 90s (readyz %d, %v backends); its log ends:\n%s",
					admin, code, n, b.logTail(admin))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, a := range append([]string{t.addr}, t.extra...) {
		if err := waitWS(a); err != nil {
			return nil, fmt.Errorf("meshlb: %w", err)
		}
	}
	return t, nil
}

// logTail returns the last lines of the log of the mesh node with this
// admin address.
func (b *bench) logTail(admin string) string {
	for _, p := range b.all {
		if slices.Contains(p.Cmd.Args, admin) {
			data, _ := os.ReadFile(filepath.Join(b.dir, p.Name+".log"))
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			return strings.Join(lines[max(0, len(lines)-8):], "\n")
		}
	}
	return ""
}

// waitWS waits until a WebSocket can be opened to addr.
func waitWS(addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, _, err := wsload.Dial(ctx, fmt.Sprintf("ws://%s/ws?session_id=probe", addr), 0)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --- output ---

func (b *bench) print(sticky string) {
	o := b.o
	fmt.Printf("\nproxies side by side, %d repetitions interleaved, medians; ratio = proxy / direct\n", o.runs)
	fmt.Printf("idle: %d WebSockets; echo: %d conns x %d in flight x %d B, %v; handshakes: %d, %d at a time; latency: %d conns, 1 in flight, %v\n\n",
		o.idle, o.conns, o.inflight, o.size, o.duration, o.handshakes, o.hsConc, o.latConns, o.latDur)
	direct := b.targets[0]
	med := func(t *target, f func(result) float64) float64 {
		xs := make([]float64, len(t.res))
		for i, r := range t.res {
			xs[i] = f(r)
		}
		return wsload.Median(xs)
	}
	rows := []struct {
		name string
		f    func(result) float64
		// per, if set, is the same run's figure the proxy's is divided
		// by; otherwise the ratio is to direct.
		per func(result) float64
		// higher: more is better (rates); otherwise less is.
		higher bool
	}{
		{"RSS per idle WebSocket (KiB)", func(r result) float64 { return r.idleKiB }, nil, false},
		{"echo throughput (msg/s)", func(r result) float64 { return r.msgs }, nil, true},
		{"proxy CPU per message (µs)", func(r result) float64 { return r.proxyCPU }, func(r result) float64 { return r.backendCPU }, false},
		{"backends' CPU per message (µs)", func(r result) float64 { return r.backendCPU }, nil, false},
		{"handshakes/s", func(r result) float64 { return r.hsRate }, nil, true},
		{"proxy CPU per handshake (µs)", func(r result) float64 { return r.hsProxyCPU }, func(r result) float64 { return r.hsBackendCPU }, false},
		{"backends' CPU per handshake (µs)", func(r result) float64 { return r.hsBackendCPU }, nil, false},
		{"echo p50 at 100 conns (µs)", func(r result) float64 { return r.p50 }, nil, false},
		{"echo p99 at 100 conns (µs)", func(r result) float64 { return r.p99 }, nil, false},
		{"proxy CPU per round trip (µs)", func(r result) float64 { return r.rtProxyCPU }, func(r result) float64 { return r.rtBackendCPU }, false},
		{"backends' CPU per round trip (µs)", func(r result) float64 { return r.rtBackendCPU }, nil, false},
	}
	fmt.Printf("%-34s", "figure")
	for _, t := range b.targets {
		fmt.Printf(" %16s", t.name)
	}
	fmt.Printf(" %16s\n", "meshlb/best peer")
	for _, row := range rows {
		fmt.Printf("%-34s", row.name)
		d := med(direct, row.f)
		for _, t := range b.targets {
			v := med(t, row.f)
			cell := wsload.Num(v)
			switch {
			case t == direct && row.per != nil:
				cell = "-"
			case t == direct:
			case row.per != nil:
				cell += fmt.Sprintf(" (%.2fx)", v/med(t, row.per))
			default:
				cell += fmt.Sprintf(" (%.2fx)", v/d)
			}
			fmt.Printf(" %16s", cell)
		}
		fmt.Printf(" %16s\n", b.toBestPeer(func(t *target) float64 { return med(t, row.f) }, row.higher))
	}
	b.printSyscalls()
	fmt.Println("\n(x): to direct; for proxy CPU, to the backends' CPU per message, handshake or round trip in the same run.")
	fmt.Println("RSS per idle WebSocket, direct: what one echo backend holds per WebSocket.")
	fmt.Println("\nper run:")
	for _, t := range b.targets {
		for i, r := range t.res {
			fmt.Printf("  %-7s %d: idle %.2f KiB (opened in %.1fs), %.0f msg/s, proxy %.2f / backends %.2f µs/msg, %.0f hs/s, proxy %.1f / backends %.1f µs/hs, p50 %.0f p99 %.0f µs, proxy %.1f / backends %.1f µs/rt\n",
				t.name, i+1, r.idleKiB, r.idleOpenSecs, r.msgs, r.proxyCPU, r.backendCPU, r.hsRate, r.hsProxyCPU, r.hsBackendCPU, r.p50, r.p99, r.rtProxyCPU, r.rtBackendCPU)
		}
	}
	fmt.Printf("\nsticky: %s\n", sticky)
}

// --- /proc ---

func children(pid int) []int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}
