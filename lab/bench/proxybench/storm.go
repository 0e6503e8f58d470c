//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshlb/meshlb/lab/internal/wsload"
)

// The reconnect storm (--storm sessions): what a node's death costs.
//
// Mesh: --storm WebSockets over a fresh 3-node mesh, a third through each
// node, every session on the backend the ring gives it. n0 gets kill -9;
// its clients (no backoff) reconnect through the two others at once. The
// figures: each client's gap from losing its connection to a WebSocket
// that answers "whoami" with its own backend (p50, p99, max), when the
// last one is back counted from the kill, the survivors' CPU from the
// kill to then, failed attempts by kind, and sessions that came back on
// another backend (which should be none: the ring did not change).
//
// Peers: the same --storm/3 reconnects arriving at once at HAProxy, at
// NGINX and at one meshlb node (burst: every client dials at one moment
// and is timed to its first "whoami" answer), and each proxy's CPU.
//
// A node holds two descriptors per session, and the survivors hold half
// of the sessions each: under an open-file limit too low for --storm the
// count is lowered to what fits, and the report says so.

// stormResult is one storm's figures.
type stormResult struct {
	name       string
	clients    int // that had to reconnect
	p50, p99   float64
	max        float64 // ms
	allBack    float64 // ms from the kill (or the burst) to the last client back
	cpuMs      float64 // the proxy's CPU (the survivors') over that time
	errors     map[string]int
	moved      int
	lost       int
	sessionsAt int // sessions held in all (mesh)
}

// stormSessions is --storm lowered to what the open-file limit allows.
func stormSessions(want int, limit uint64) (int, string) {
	// A survivor holds half of the sessions, two descriptors each, and
	// meshlb keeps a reserve (node/maxconns.go): leave 2,000.
	fit := int(limit) - 2000
	fit -= fit % 6
	if want <= fit {
		return want, ""
	}
	return fit, fmt.Sprintf("--storm %d lowered to %d: RLIMIT_NOFILE is %d, and a surviving node holds half of the sessions, 2 descriptors each (run as root with CAP_SYS_RESOURCE for more)", want, fit, limit)
}

// stormWorkers are the client processes of one storm.
type stormWorkers struct {
	stopOnce sync.Once
	procs    []*exec.Cmd
	in       []io.WriteCloser
	out      []*bufio.Scanner
}

const stormPerWorker = 5000

func (b *bench) startStormWorkers(addrs []string, n int, burst bool) (*stormWorkers, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	sw := &stormWorkers{}
	for from := 0; from < n; from += stormPerWorker {
		args := []string{"storm-client", "--addrs", strings.Join(addrs, ","), "--from", fmt.Sprint(from), "--n", fmt.Sprint(min(stormPerWorker, n-from))}
		if burst {
			args = append(args, "--burst")
		}
		cmd := exec.Command(self, args...)
		cmd.Stderr = os.Stderr
		in, err1 := cmd.StdinPipe()
		out, err2 := cmd.StdoutPipe()
		if err1 != nil || err2 != nil {
			sw.stop()
			return nil, fmt.Errorf("storm worker pipes: %v %v", err1, err2)
		}
		if err := cmd.Start(); err != nil {
			sw.stop()
			return nil, err
		}
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		sw.procs, sw.in, sw.out = append(sw.procs, cmd), append(sw.in, in), append(sw.out, sc)
	}
	return sw, nil
}

// ask sends line to every worker and returns each one's answer.
func (sw *stormWorkers) ask(line string) ([]string, error) {
	for _, in := range sw.in {
		if _, err := fmt.Fprintln(in, line); err != nil {
			return nil, fmt.Errorf("storm worker: %w", err)
		}
	}
	out := make([]string, len(sw.out))
	for i, sc := range sw.out {
		if !sc.Scan() {
			return nil, fmt.Errorf("storm worker %d gave no answer to %s: %v", i, line, sc.Err())
		}
		out[i] = sc.Text()
	}
	return out, nil
}

func (sw *stormWorkers) tell(line string) error {
	for _, in := range sw.in {
		if _, err := fmt.Fprintln(in, line); err != nil {
			return fmt.Errorf("storm worker: %w", err)
		}
	}
	return nil
}

// waitBack polls until want clients lost their connection and are all
// back (or lost for good), or the deadline.
func (sw *stormWorkers) waitBack(want int, deadline time.Time) error {
	for {
		answers, err := sw.ask("status")
		if err != nil {
			return err
		}
		lost, back := 0, 0
		for _, a := range answers {
			var l, k int
			fmt.Sscanf(a, "status %d %d", &l, &k)
			lost, back = lost+l, back+k
		}
		if lost >= want && back >= lost {
			return nil
		}
		if time.Now().After(deadline) {
			logf("storm: %d of %d lost, %d back at the deadline", lost, want, back)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// report collects the workers' figures and ends them.
func (sw *stormWorkers) report(name string, since time.Time) (stormResult, error) {
	answers, err := sw.ask("report")
	if err != nil {
		return stormResult{}, err
	}
	sw.stop()
	r := stormResult{name: name, errors: map[string]int{}}
	var gaps []float64
	var last int64
	for _, a := range answers {
		var w stormReport
		if err := json.Unmarshal([]byte(a), &w); err != nil {
			return r, fmt.Errorf("storm worker report: %w", err)
		}
		for _, g := range w.GapsUs {
			gaps = append(gaps, float64(g)/1000)
		}
		last = max(last, w.BackUnixNs)
		for k, v := range w.Errors {
			r.errors[k] += v
		}
		r.moved += w.Moved
		r.lost += w.Lost
	}
	r.clients = len(gaps) + r.lost
	if len(gaps) > 0 {
		slices.Sort(gaps)
		q := func(f float64) float64 { return gaps[min(len(gaps)-1, int(f*float64(len(gaps))))] }
		r.p50, r.p99, r.max = q(0.50), q(0.99), gaps[len(gaps)-1]
		r.allBack = float64(time.Unix(0, last).Sub(since).Microseconds()) / 1000
	}
	return r, nil
}

// stop ends the workers (report does, and the caller defers it too).
func (sw *stormWorkers) stop() { sw.stopOnce.Do(sw.end) }

func (sw *stormWorkers) end() {
	for _, in := range sw.in {
		in.Close()
	}
	for _, p := range sw.procs {
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
}

// runStorm runs the mesh storm and the bursts at each proxy; the figures
// go to b.storm.
func (b *bench) runStorm() error {
	limit, err := wsload.RaiseNofile()
	if err != nil {
		return err
	}
	n, lowered := stormSessions(b.o.storm, limit)
	if lowered != "" {
		logf("storm: %s", lowered)
		b.stormNote = lowered
	}
	if n < 6 {
		return fmt.Errorf("storm: too few sessions fit (%d)", n)
	}
	if err := b.restartBackends(); err != nil {
		return err
	}
	mesh, err := b.stormMesh(n)
	if err != nil {
		return fmt.Errorf("storm: mesh: %w", err)
	}
	b.storm = append(b.storm, mesh)
	// The peers' bursts: the dead node's share, at once.
	for _, t := range b.targets[1:] {
		if err := b.restartBackends(); err != nil {
			return err
		}
		if err := b.restart(t); err != nil {
			return fmt.Errorf("storm: %s: %w", t.name, err)
		}
		r, err := b.stormBurst(t, n/3)
		if err != nil {
			return fmt.Errorf("storm: %s burst: %w", t.name, err)
		}
		b.storm = append(b.storm, r)
	}
	return nil
}

func (b *bench) stormMesh(n int) (stormResult, error) {
	t, err := b.startMesh()
	if err != nil {
		return stormResult{}, err
	}
	defer wsload.Stop(t.owned)
	addrs := append([]string{t.addr}, t.extra...)
	sw, err := b.startStormWorkers(addrs, n, false)
	if err != nil {
		return stormResult{}, err
	}
	defer sw.stop()
	t0 := time.Now()
	answers, err := sw.ask("hold")
	if err != nil {
		return stormResult{}, err
	}
	opened := 0
	for _, a := range answers {
		var ok, failed int
		fmt.Sscanf(a, "ready %d %d", &ok, &failed)
		opened += ok
		if failed > 0 {
			return stormResult{}, fmt.Errorf("%d sessions failed to open", failed)
		}
	}
	logf("storm: %d sessions open over 3 nodes in %.1fs", opened, time.Since(t0).Seconds())
	time.Sleep(2 * time.Second)
	survivors := []int{t.owned[1].Pid(), t.owned[2].Pid()}
	c0 := wsload.CPUTicks(survivors...)
	kill := time.Now()
	if err := t.owned[0].Cmd.Process.Kill(); err != nil {
		return stormResult{}, err
	}
	if err := sw.waitBack((n+2)/3, kill.Add(2*time.Minute)); err != nil {
		return stormResult{}, err
	}
	el := time.Since(kill)
	c1 := wsload.CPUTicks(survivors...)
	r, err := sw.report("meshlb mesh, kill -9 n0", kill)
	r.cpuMs = float64(c1-c0) * 1000 / wsload.UserHZ
	r.sessionsAt = opened
	logf("storm: %d reconnected in %.2fs", r.clients-r.lost, el.Seconds())
	return r, err
}

func (b *bench) stormBurst(t *target, n int) (stormResult, error) {
	sw, err := b.startStormWorkers([]string{t.addr}, n, true)
	if err != nil {
		return stormResult{}, err
	}
	defer sw.stop()
	pids := wsload.Pids(t.procs)
	c0 := wsload.CPUTicks(pids...)
	start := time.Now()
	if err := sw.tell("go"); err != nil {
		return stormResult{}, err
	}
	if err := sw.waitBack(n, start.Add(2*time.Minute)); err != nil {
		return stormResult{}, err
	}
	c1 := wsload.CPUTicks(pids...)
	name := t.name
	if name == "meshlb" {
		name = "meshlb, one node"
	}
	r, err := sw.report(name+", burst", start)
	r.cpuMs = float64(c1-c0) * 1000 / wsload.UserHZ
	return r, err
}

func (b *bench) printStorm() {
	if len(b.storm) == 0 {
		return
	}
	fmt.Printf("\nreconnect storm: %d sessions over 3 meshlb nodes, n0 killed (-9), its clients reconnect through the others at once, no backoff;\n", b.storm[0].sessionsAt)
	fmt.Printf("bursts: the same number of reconnects arriving at once at each proxy. gap: a client's loss (or the burst) to its own backend's answer\n")
	if b.stormNote != "" {
		fmt.Printf("(%s)\n", b.stormNote)
	}
	fmt.Printf("\n%-28s %8s %9s %9s %9s %11s %10s %12s %6s %5s  %s\n", "storm", "clients", "p50 ms", "p99 ms", "max ms", "all back ms", "CPU ms", "CPU µs/conn", "moved", "lost", "failed attempts")
	var best *stormResult
	for i := range b.storm {
		if r := &b.storm[i]; !strings.HasPrefix(r.name, "meshlb") && (best == nil || r.p99 < best.p99) {
			best = r
		}
	}
	for i := range b.storm {
		r := &b.storm[i]
		errs := "none"
		if len(r.errors) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(r.errors)) {
				parts = append(parts, fmt.Sprintf("%s %d", k, r.errors[k]))
			}
			errs = strings.Join(parts, ", ")
		}
		fmt.Printf("%-28s %8d %9.1f %9.1f %9.1f %11.1f %10.0f %12.0f %6d %5d  %s\n", r.name, r.clients, r.p50, r.p99, r.max, r.allBack, r.cpuMs, r.perConn(), r.moved, r.lost, errs)
	}
	if best == nil {
		return
	}
	for i := range b.storm {
		if r := &b.storm[i]; strings.HasPrefix(r.name, "meshlb") {
			fmt.Printf("%-28s %8s %9.2f %9.2f %9.2f %11.2f %10s %12.2f  (%s / the best peer, %s; lower is better)\n", "  ratio", "",
				r.p50/best.p50, r.p99/best.p99, r.max/best.max, r.allBack/best.allBack, "", r.perConn()/best.perConn(), r.name, best.name)
		}
	}
}

// perConn is the proxy's CPU per client back, in µs.
func (r *stormResult) perConn() float64 {
	if back := r.clients - r.lost; back > 0 {
		return r.cpuMs * 1000 / float64(back)
	}
	return 0
}
