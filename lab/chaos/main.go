//go:build linux

// Command chaos is meshlb's seeded chaos soak (make chaos). It builds a lab
// of network namespaces (internal/netlab): five meshlb nodes, three
// `meshlb echo` backends and a client host, each on its own address on
// one bridge. It then runs `meshlb bench` from the client for the whole
// run while it kills (kill -9 and SIGTERM) and restarts nodes, freezes
// them with SIGSTOP, partitions the bridge (both ways and one way) and
// heals it, and kills and restarts backends, on a schedule drawn from the
// seed. It prints the schedule as it runs, the bench's report and verdict,
// and a summary; the exit status is 1 when the bench fails or the mesh is
// not one ring again at the end, 77 when the lab can't be built here.
//
//	CHAOS_MINUTES=5 CHAOS_SEED=42 go run ./lab/chaos --meshlb bin/meshlb
//
// Flags take their defaults from CHAOS_* variables (see --help).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshlb/meshlb/internal/loadgen"
	"github.com/meshlb/meshlb/internal/netlab"
)

// exitSkip is automake's SKIP: the lab can't be built on this machine.
const exitSkip = 77

const (
	gossipPort = "7946"
	proxyPort  = "8080"
	adminPort  = "9901"
	echoPort   = "9000"
)

func main() { os.Exit(run()) }

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run() int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	binary := fs.String("meshlb", envOr("CHAOS_MESHLB", "bin/meshlb"), "meshlb binary (CHAOS_MESHLB)")
	minutes := fs.Float64("minutes", 5, "length of the run in minutes (CHAOS_MINUTES)")
	seed := fs.Uint64("seed", 0, "seed of the schedule and the bench's sessions; 0: random, printed (CHAOS_SEED)")
	sessions := fs.Int("sessions", 300, "bench sessions (CHAOS_SESSIONS)")
	maxErr := fs.Float64("max-error-rate", 0.05, "the bench's --max-error-rate: failed operations the faults may cost (CHAOS_MAX_ERROR_RATE)")
	dryRun := fs.Bool("dry-run", false, "print the schedule the seed draws and exit")
	logs := fs.String("logs", envOr("CHAOS_LOGS", ""), "directory for the processes' logs (default: a new temporary directory, kept) (CHAOS_LOGS)")
	// The environment supplies defaults, flags win.
	for _, e := range []struct{ flag, env string }{
		{"minutes", "CHAOS_MINUTES"}, {"seed", "CHAOS_SEED"}, {"sessions", "CHAOS_SESSIONS"}, {"max-error-rate", "CHAOS_MAX_ERROR_RATE"},
	} {
		if v := os.Getenv(e.env); v != "" {
			if err := fs.Set(e.flag, v); err != nil {
				fmt.Fprintf(os.Stderr, "chaos: %s=%q: %v\n", e.env, v, err)
				return 2
			}
		}
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	total := time.Duration(*minutes * float64(time.Minute))
	if total < 2*quietEnd || *sessions < 1 {
		fmt.Fprintf(os.Stderr, "chaos: --minutes must be at least %v and --sessions positive\n", 2*quietEnd)
		return 2
	}
	if *seed == 0 {
		*seed = rand.Uint64N(1<<31) + 1 // short enough to retype
	}
	const nodes, backends = 5, 3
	plan := makePlan(rand.New(rand.NewPCG(*seed, 0x6d6573686c62)), total, nodes, backends)
	if *dryRun {
		fmt.Printf("chaos: seed %d, %v: %d steps\n", *seed, total, len(plan))
		for _, s := range plan {
			fmt.Printf("chaos: %+8.1fs  %s\n", s.At.Seconds(), s)
		}
		return 0
	}
	if err := netlab.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v: cannot build the lab here (skipped)\n", err)
		return exitSkip
	}
	bin, err := filepath.Abs(*binary)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: meshlb binary: %v (make build first)\n", err)
		return 2
	}
	if *logs == "" {
		if *logs, err = os.MkdirTemp("", fmt.Sprintf("meshlb-chaos-%d-", *seed)); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
			return 1
		}
	} else if err := os.MkdirAll(*logs, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 1
	}

	fmt.Printf("chaos: seed %d (CHAOS_SEED=%d repeats this schedule), %v, %d nodes, %d backends, %d sessions\n",
		*seed, *seed, total, nodes, backends, *sessions)
	fmt.Printf("chaos: logs in %s\n", *logs)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := &soak{bin: bin, logs: *logs, nodes: nodes, backends: backends,
		procs: map[string]*proc{}}
	netlab.Reap("mlbc")
	lab, err := netlab.New(netlab.Prefix("mlbc"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 1
	}
	c.lab = lab
	defer func() {
		if err := lab.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: clean-up: %v\n", err)
		}
	}()
	if err := c.build(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: lab: %v\n", err)
		return 1
	}
	if _, err := c.oneRing(ctx, 60*time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: the mesh never formed: %v\n", err)
		return 1
	}
	fmt.Println("chaos: one ring on every node; starting the bench")

	report, code, done, err := c.soak(ctx, plan, total, *seed, *sessions, *maxErr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 1
	}
	fmt.Println()
	fmt.Println("chaos: the bench's report")
	report.WriteSummary(os.Stdout)

	// Every fault was undone quietEnd before the end: the mesh must be
	// whole again.
	fmt.Println()
	interrupted := ctx.Err() != nil
	ringOK := true
	if interrupted {
		fmt.Println("chaos: interrupted: the mesh's recovery was not checked")
	} else if d, err := c.oneRing(ctx, 60*time.Second); err != nil {
		ringOK = false
		fmt.Printf("chaos: NOT one ring 60 s after the bench: %v\n", err)
	} else {
		fmt.Printf("chaos: one ring on all %d nodes with all %d backends %v after the bench\n", nodes, backends, d.Round(10*time.Millisecond))
	}

	fmt.Println()
	fmt.Printf("chaos: summary of seed %d over %v (%d of %d planned actions done):\n", *seed, total, len(done), len(plan))
	counts := map[string]int{}
	for _, s := range done {
		counts[s.Do]++
	}
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		fmt.Printf("  %-20s %d\n", k, counts[k])
	}
	fmt.Printf("  bench: %d sessions, %d answered, %d moved (%d misroutes, %d on set changes), %d reconnects, error rate %.3f%%\n",
		report.Sessions, report.SessionsAnswered, report.SessionsMoved, report.Misroutes, report.MovedSetChanged,
		report.Reconnects, 100*report.ErrorRate)
	verdict := strings.ToUpper(report.Verdict)
	if len(report.Reasons) > 0 {
		verdict += ": " + strings.Join(report.Reasons, "; ")
	}
	fmt.Printf("chaos: verdict %s (bench exit %d)", verdict, code)
	if !ringOK {
		fmt.Print("; mesh not whole at the end")
	}
	fmt.Println()
	switch {
	case code != 0 || report.Verdict != "pass" || !ringOK:
		return 1
	case interrupted:
		return 130 // the shell's code for SIGINT: no full verdict
	}
	return 0
}

// soak is the lab and what runs in it.
type soak struct {
	bin, logs       string
	nodes, backends int
	lab             *netlab.Lab
	client          *http.Client // from the client host
	mu              sync.Mutex
	procs           map[string]*proc // by host
	nodeArgs        []string
}

func nodeAddr(i int) string    { return fmt.Sprintf("10.77.0.%d", 10+i) }
func backendAddr(j int) string { return fmt.Sprintf("10.77.0.%d", 20+j) }

// build adds the hosts and starts the backends and nodes.
func (c *soak) build(ctx context.Context) error {
	if _, err := c.lab.AddHost("c", "10.77.0.100"); err != nil {
		return err
	}
	c.client = &http.Client{Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: c.lab.Dialer("c"), DisableKeepAlives: true}}
	for j := 1; j <= c.backends; j++ {
		if _, err := c.lab.AddHost(fmt.Sprintf("b%d", j), backendAddr(j)); err != nil {
			return err
		}
		c.nodeArgs = append(c.nodeArgs, "--backend", fmt.Sprintf("web-%d=%s:%s", j, backendAddr(j), echoPort))
		if err := c.startBackend(ctx, j); err != nil {
			return err
		}
	}
	// Every node lists every node as a seed, as a deployment would: a
	// restarted node finds the mesh through whoever is up.
	var seeds []string
	for i := 1; i <= c.nodes; i++ {
		if _, err := c.lab.AddHost(fmt.Sprintf("n%d", i), nodeAddr(i)); err != nil {
			return err
		}
		seeds = append(seeds, nodeAddr(i)+":"+gossipPort)
	}
	c.nodeArgs = append(c.nodeArgs, "--join", strings.Join(seeds, ","))
	for i := 1; i <= c.nodes; i++ {
		if err := c.startNode(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// proc is one process in the lab; its output goes to a log file that
// restarts append to.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func (c *soak) start(host string, argv ...string) (*proc, error) {
	f, err := os.OpenFile(filepath.Join(c.logs, host+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "--- %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := c.lab.Command(host, argv...)
	cmd.Stdout, cmd.Stderr = f, f
	// A process group of its own: Ctrl-C reaches only the soak, which
	// stops the bench and tears the lab down itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The lab decides the configuration, not the caller's environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHLB_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	c.mu.Lock()
	c.procs[host] = p
	c.mu.Unlock()
	return p, nil
}

func (c *soak) proc(host string) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[host]
}

func (c *soak) startBackend(ctx context.Context, j int) error {
	host, addr := fmt.Sprintf("b%d", j), backendAddr(j)+":"+echoPort
	p, err := c.start(host, c.bin, "echo", "--id", fmt.Sprintf("web-%d", j), "--listen", addr)
	if err != nil {
		return err
	}
	return c.waitUp(ctx, p, host, func() error {
		conn, err := c.lab.Dialer("c")(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err
	})
}

func (c *soak) startNode(ctx context.Context, i int) error {
	host, a := fmt.Sprintf("n%d", i), nodeAddr(i)
	argv := append([]string{c.bin, "node", "--name", host, "--log-format", "json",
		"--gossip-addr", a + ":" + gossipPort, "--listen", a + ":" + proxyPort, "--admin", a + ":" + adminPort,
		"--admin-insecure"}, c.nodeArgs...) // a private lab network: no tokens, said so
	p, err := c.start(host, argv...)
	if err != nil {
		return err
	}
	return c.waitUp(ctx, p, host, func() error {
		resp, err := c.client.Get("http://" + a + ":" + adminPort + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
}

// waitUp polls up until it succeeds, the process exits or 20 s pass.
func (c *soak) waitUp(ctx context.Context, p *proc, host string, up func() error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := up()
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited at start (log in %s)", host, c.logs)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not up after 20 s: %v", host, err)
		}
	}
}

// signal sends sig to the process on host, if it runs.
func (c *soak) signal(host string, sig syscall.Signal) error {
	p := c.proc(host)
	if p == nil {
		return fmt.Errorf("%s: no process", host)
	}
	select {
	case <-p.exited:
		return fmt.Errorf("%s: not running", host)
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// restart starts host's process again once the old one is gone: a
// SIGTERM'd node may still be draining (kill -9 after 45 s, beyond its
// default --drain-delay + --drain-timeout + --leave-timeout, about 41 s).
func (c *soak) restart(ctx context.Context, host string, start func() error) error {
	if p := c.proc(host); p != nil {
		select {
		case <-p.exited:
		case <-time.After(45 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
	return start()
}

// apply carries out one step.
func (c *soak) apply(ctx context.Context, s step) error {
	node := fmt.Sprintf("n%d", s.Target)
	backend := fmt.Sprintf("b%d", s.Target)
	switch s.Do {
	case killNode:
		return c.signal(node, syscall.SIGKILL)
	case termNode:
		return c.signal(node, syscall.SIGTERM)
	case stopNode:
		return c.signal(node, syscall.SIGSTOP)
	case contNode:
		return c.signal(node, syscall.SIGCONT)
	case startNode:
		return c.restart(ctx, node, func() error { return c.startNode(ctx, s.Target) })
	case killBackend:
		return c.signal(backend, syscall.SIGKILL)
	case termBackend:
		return c.signal(backend, syscall.SIGTERM)
	case startBackend:
		return c.restart(ctx, backend, func() error { return c.startBackend(ctx, s.Target) })
	case partition:
		return c.lab.Partition(hosts(s.A), hosts(s.B))
	case oneWay:
		return c.lab.DropInput(fmt.Sprintf("n%d", s.A[0]), fmt.Sprintf("n%d", s.B[0]))
	case heal:
		return c.lab.Heal()
	}
	return fmt.Errorf("unknown step %q", s.Do)
}

func hosts(is []int) []string {
	var hs []string
	for _, i := range is {
		hs = append(hs, fmt.Sprintf("n%d", i))
	}
	return hs
}

// soak runs the bench for total and the plan meanwhile, and returns the
// bench's report and exit code, and the steps carried out.
func (c *soak) soak(ctx context.Context, plan []step, total time.Duration, seed uint64, sessions int, maxErr float64) (*loadgen.Report, int, []step, error) {
	var nodes, admins []string
	for i := 1; i <= c.nodes; i++ {
		nodes = append(nodes, nodeAddr(i)+":"+proxyPort)
		admins = append(admins, nodeAddr(i)+":"+adminPort)
	}
	f, err := os.Create(filepath.Join(c.logs, "bench.log"))
	if err != nil {
		return nil, 0, nil, err
	}
	defer f.Close()
	pr, pw := io.Pipe()
	cmd := c.lab.Command("c", c.bin, "bench", "--json", "--log-level", "info",
		"--nodes", strings.Join(nodes, ","), "--admin", strings.Join(admins, ","),
		"--sessions", strconv.Itoa(sessions), "--duration", total.String(), "--rate", "100",
		"--seed", strconv.FormatUint(seed, 10), "--max-error-rate", strconv.FormatFloat(maxErr, 'g', -1, 64),
		"--wait-ready", "30s", "--wait-members", strconv.Itoa(c.nodes))
	var stdout strings.Builder
	cmd.Stdout = &stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = io.MultiWriter(f, pw)
	if err := cmd.Start(); err != nil {
		return nil, 0, nil, err
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		exited <- err
	}()
	// The schedule counts from the bench's first session.
	started := make(chan struct{})
	go func() {
		// Reads to the end, so the bench never blocks on its stderr.
		buf := make([]byte, 64<<10)
		var seen strings.Builder
		once := false
		for {
			n, err := pr.Read(buf)
			if n > 0 && !once {
				seen.Write(buf[:n])
				if strings.Contains(seen.String(), `"bench started"`) {
					once = true
					close(started)
				}
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-started:
	case err := <-exited:
		return nil, 0, nil, fmt.Errorf("bench ended before it started: %v (log in %s)", err, f.Name())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, 0, nil, fmt.Errorf("bench did not start (log in %s)", f.Name())
	}
	t0 := time.Now()
	interrupted := false
	var done []step // the steps carried out
	for _, s := range plan {
		select {
		case <-time.After(time.Until(t0.Add(s.At))):
		case <-ctx.Done():
			interrupted = true
		}
		if interrupted {
			break
		}
		err := c.apply(ctx, s)
		done = append(done, s)
		line := fmt.Sprintf("chaos: %+8.1fs  %s", time.Since(t0).Seconds(), s)
		if err != nil {
			line += "  (" + err.Error() + ")"
		}
		fmt.Println(line)
	}
	benchDone := false
	if !interrupted {
		select {
		case err = <-exited:
			benchDone = true
		case <-ctx.Done():
			interrupted = true
		}
	}
	if interrupted {
		fmt.Println("chaos: interrupted: healing and stopping the bench")
		c.lab.Heal()
		for i := 1; i <= c.nodes; i++ {
			c.signal(fmt.Sprintf("n%d", i), syscall.SIGCONT)
		}
		cmd.Process.Signal(syscall.SIGINT)
	}
	if !benchDone {
		err = <-exited
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		return nil, 0, nil, err
	}
	var r loadgen.Report
	if err := json.Unmarshal([]byte(stdout.String()), &r); err != nil {
		return nil, code, done, fmt.Errorf("bench exit %d and no report: %v (log in %s)", code, err, f.Name())
	}
	if err := os.WriteFile(filepath.Join(c.logs, "bench.json"), []byte(stdout.String()), 0o644); err != nil {
		return nil, code, done, err
	}
	return &r, code, done, nil
}

// oneRing waits until every node is up, sees every node, has every
// backend on its ring and agrees on it, and returns how long it took.
func (c *soak) oneRing(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	var why error
	for time.Since(start) < timeout {
		if why = c.checkRing(); why == nil {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return 0, why
}

func (c *soak) checkRing() error {
	var fp string
	for i := 1; i <= c.nodes; i++ {
		var s struct {
			Members []json.RawMessage `json:"members"`
			Ring    struct {
				Fingerprint string `json:"fingerprint"`
				Backends    int    `json:"backends"`
			} `json:"ring"`
			RingAgreed bool `json:"ring_agreed"`
		}
		addr := net.JoinHostPort(nodeAddr(i), adminPort)
		resp, err := c.client.Get("http://" + addr + "/v1/status")
		if err != nil {
			return err
		}
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		switch {
		case err != nil:
			return fmt.Errorf("n%d: %w", i, err)
		case len(s.Members) != c.nodes || s.Ring.Backends != c.backends || !s.RingAgreed:
			return fmt.Errorf("n%d: %d members, %d backends, ring agreed %v", i, len(s.Members), s.Ring.Backends, s.RingAgreed)
		case fp != "" && s.Ring.Fingerprint != fp:
			return fmt.Errorf("n%d: ring %s, n1 %s", i, s.Ring.Fingerprint, fp)
		}
		fp = s.Ring.Fingerprint
	}
	return nil
}
