//go:build linux

package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshlb/meshlb/internal/netlab"
)

// netnsBase starts the namespace names of these tests; netlab.Reap
// removes those of runs that died without cleaning up.
const netnsBase = "mlbt"

// needNetns skips where a lab can't be built, saying what is missing.
func needNetns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped under -short: builds network namespaces and runs real processes")
	}
	if err := netlab.Available(); err != nil {
		t.Skipf("%v: skipping the network-namespace tests (CI runs them as root with iproute2 and nftables)", err)
	}
}

// netMesh is a mesh on a lab: node i (1-based) on host "n<i>" at
// 10.77.0.(10+i), backend web-j on host "b<j>" at 10.77.0.(20+j), and one
// client host "c" at 10.77.0.100 for the bench and the test's own status
// polls. Nodes use the production gossip and health timings: what these
// tests measure is what a deployment gets.
type netMesh struct {
	t      *testing.T
	lab    *netlab.Lab
	client *http.Client // dials from the client host
	flags  []string     // every node's flags but --join

	mu       sync.Mutex
	nodes    map[string]*proc // by host
	backends map[string]*proc // by id
}

const (
	gossipPort = "7946"
	proxyPort  = "8080"
	adminPort  = "9901"
	echoPort   = "9000"
)

func nodeHost(i int) string { return fmt.Sprintf("n%d", i) }
func nodeAddr(i int) string { return fmt.Sprintf("10.77.0.%d", 10+i) }

// extra flags, if any, go to every node.
func newNetMesh(t *testing.T, nodes, backends int, extra ...string) *netMesh {
	t.Helper()
	netlab.Reap(netnsBase)
	lab, err := netlab.New(netlab.Prefix(netnsBase))
	if err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: after every process's own
	// cleanup, and on failure too.
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab clean-up: %v", err)
		}
	})
	m := &netMesh{t: t, lab: lab, nodes: map[string]*proc{}, backends: map[string]*proc{}}
	if _, err := lab.AddHost("c", "10.77.0.100"); err != nil {
		t.Fatal(err)
	}
	m.client = &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{DialContext: lab.Dialer("c"), DisableKeepAlives: true},
	}
	var flags []string
	for j := 1; j <= backends; j++ {
		id, host := fmt.Sprintf("web-%d", j), fmt.Sprintf("b%d", j)
		if _, err := lab.AddHost(host, fmt.Sprintf("10.77.0.%d", 20+j)); err != nil {
			t.Fatal(err)
		}
		m.startEcho(id)
		flags = append(flags, "--backend", id+"="+m.echoAddr(id))
	}
	for i := 1; i <= nodes; i++ {
		if _, err := lab.AddHost(nodeHost(i), nodeAddr(i)); err != nil {
			t.Fatal(err)
		}
	}
	flags = append(flags, extra...)
	m.flags = flags
	for i := 1; i <= nodes; i++ {
		args := slices.Clone(flags)
		if i > 1 {
			args = append(args, "--join", nodeAddr(1)+":"+gossipPort)
		}
		m.startNode(i, args...)
	}
	return m
}

func (m *netMesh) echoAddr(id string) string {
	var j int
	fmt.Sscanf(id, "web-%d", &j)
	return fmt.Sprintf("10.77.0.%d:%s", 20+j, echoPort)
}

func (m *netMesh) startEcho(id string) {
	m.t.Helper()
	host := "b" + strings.TrimPrefix(id, "web-")
	p := runCmd(m.t, id, m.lab.Command(host, binary, "echo", "--id", id, "--listen", m.echoAddr(id)))
	m.waitStarted(p)
	m.mu.Lock()
	m.backends[id] = p
	m.mu.Unlock()
}

func (m *netMesh) startNode(i int, args ...string) {
	m.t.Helper()
	a := nodeAddr(i)
	argv := append([]string{binary, "node", "--name", nodeHost(i), "--log-format", "json",
		"--gossip-addr", a + ":" + gossipPort, "--listen", a + ":" + proxyPort, "--admin", a + ":" + adminPort,
		"--admin-insecure"}, args...) // a private lab network: no tokens, said so
	p := runCmd(m.t, nodeHost(i), m.lab.Command(nodeHost(i), argv...))
	m.waitStarted(p)
	m.mu.Lock()
	m.nodes[nodeHost(i)] = p
	m.mu.Unlock()
}

func (m *netMesh) waitStarted(p *proc) {
	m.t.Helper()
	select {
	case <-p.started:
	case <-p.exited:
		m.t.Fatalf("%s exited at start: %v\n%s", p.name, p.err, p.output())
	case <-time.After(20 * time.Second):
		m.t.Fatalf("%s did not start\n%s", p.name, p.output())
	}
}

func (m *netMesh) node(i int) *proc {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nodes[nodeHost(i)]
}

func (m *netMesh) backend(id string) *proc {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.backends[id]
}

// addrs lists the proxy and admin addresses of nodes is.
func addrs(is []int) (proxies, admins []string) {
	for _, i := range is {
		proxies = append(proxies, nodeAddr(i)+":"+proxyPort)
		admins = append(admins, nodeAddr(i)+":"+adminPort)
	}
	return proxies, admins
}

func seq(from, to int) []int {
	var s []int
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// waitOneRing waits until nodes is agree on one ring of that many
// members and backends, and returns how long that took.
func (m *netMesh) waitOneRing(timeout time.Duration, what string, is []int, backends int) time.Duration {
	m.t.Helper()
	_, admins := addrs(is)
	start := time.Now()
	waitFor(m.t, timeout, what, oneRingVia(m.client, admins, len(is), backends))
	return time.Since(start)
}

// views says, for each node, how many members it sees and whether it
// thinks the mesh agrees on its ring.
func (m *netMesh) views(is []int) string {
	var parts []string
	for _, i := range is {
		s, err := getStatusVia(m.client, nodeAddr(i)+":"+adminPort)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s: %v", nodeHost(i), err))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %d members, agreed %v, ring %.8s", nodeHost(i), len(s.Members), s.RingAgreed, s.Ring.Fingerprint))
	}
	return strings.Join(parts, "; ")
}

// benchRun is a `meshlb bench --json` running on the client host.
type benchRun struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdout  bytes.Buffer // written by cmd, read after done
	stderr  lockedBuffer // read while the bench may still write
	started chan struct{}
	done    chan struct{}
}

// startBench starts the bench against nodes is and waits until its
// sessions have started.
func (m *netMesh) startBench(is []int, args ...string) *benchRun {
	m.t.Helper()
	proxies, admins := addrs(is)
	argv := append([]string{binary, "bench", "--json", "--log-level", "info", "--seed", "7",
		"--nodes", strings.Join(proxies, ","), "--admin", strings.Join(admins, ","),
		"--wait-ready", "30s", "--wait-members", fmt.Sprint(len(is)),
		// A fault costs some failed operations (timeouts on a frozen
		// node, refused connects to a dead one); the mesh's promise is
		// no misroute, which every scenario checks on its own. The
		// bound only catches a mesh that stopped serving.
		"--max-error-rate", "0.05"}, args...)
	return m.runBench(argv)
}

// runBench runs the bench command line argv on the client host and waits
// until its sessions have started.
func (m *netMesh) runBench(argv []string) *benchRun {
	m.t.Helper()
	b := &benchRun{t: m.t, cmd: m.lab.Command("c", argv...), started: make(chan struct{}), done: make(chan struct{})}
	b.cmd.Env = filterEnv(b.cmd.Environ())
	b.cmd.Stdout = &b.stdout
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.done
	})
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(io.TeeReader(stderr, &b.stderr))
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), `"bench started"`) {
				once = true
				close(b.started)
			}
		}
	}()
	select {
	case <-b.started:
	case <-b.done:
		b.cmd.Wait()
		m.t.Fatalf("bench ended before its sessions started\n%s", b.stderr.String())
	case <-time.After(60 * time.Second):
		m.t.Fatalf("bench did not start\n%s", b.stderr.String())
	}
	return b
}

// lockedBuffer is a bytes.Buffer safe for one writer and readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// stop ends the run early (the bench still reports, as on Ctrl-C).
func (b *benchRun) stop() { b.cmd.Process.Signal(syscall.SIGINT) }

// wait returns the report and the exit code.
func (b *benchRun) wait() (benchReport, int) {
	b.t.Helper()
	select {
	case <-b.done:
	case <-time.After(3 * time.Minute):
		b.t.Fatal("bench did not end")
	}
	err := b.cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		b.t.Fatal(err)
	}
	var r benchReport
	if err := json.Unmarshal(b.stdout.Bytes(), &r); err != nil {
		b.t.Fatalf("bench exit %d, no report: %v\nstdout:\n%s\nstderr:\n%s", code, err, b.stdout.String(), b.stderr.String())
	}
	return r, code
}

// logBench logs the figures every scenario reports.
func logBench(t *testing.T, r benchReport, code int) {
	t.Helper()
	t.Logf("bench exit %d, verdict %s %v: %d sessions, %d answered, %d moved (%d misroutes, %d set_changed), %d reconnects, disconnects %v, set changes %d, error rate %.3f%% %v, backends %v",
		code, r.Verdict, r.Reasons, r.Sessions, r.SessionsAnswered, r.SessionsMoved, r.Misroutes, r.MovedSetChanged,
		r.Reconnects, r.Disconnects, r.BackendSetChange, 100*r.ErrorRate, r.Errors, r.Backends)
}

// passed fails the test unless the bench passed with every session
// answered and none misrouted.
func passed(t *testing.T, r benchReport, code, sessions int) {
	t.Helper()
	if code != 0 || r.Verdict != "pass" || r.Misroutes != 0 || !r.BackendSetKnown {
		t.Fatalf("bench exit %d, verdict %s %v, %d misroutes, set known %v; want exit 0, a pass and no misroute",
			code, r.Verdict, r.Reasons, r.Misroutes, r.BackendSetKnown)
	}
	if r.SessionsAnswered != sessions {
		t.Fatalf("%d of %d sessions answered", r.SessionsAnswered, sessions)
	}
}

// Each meshlb node, backend and the bench client on a host of its own (a
// network namespace on one bridge), so faults are per host: a dead
// process, a frozen one, a cut at the switch, a one-way firewall rule.
// `meshlb bench` is the checker. The four labs run side by side: the
// partition scenarios wait out the production timers.
func TestNetns(t *testing.T) {
	needNetns(t)
	t.Run("KillNodeAndBackend", func(t *testing.T) {
		t.Parallel()
		m := newNetMesh(t, 5, 3)

		t.Run("ConvergeFromSeed", func(t *testing.T) {
			d := m.waitOneRing(30*time.Second, "5 nodes joined via n1 on one ring", seq(1, 5), 3)
			t.Logf("one ring on 5 nodes %v after the last node started: %s", d.Round(10*time.Millisecond), m.views(seq(1, 5)))
		})

		// kill -9 of a node: the others' connections to it are cut
		// without a close frame; every one of its sessions reconnects
		// through another node to the same backend.
		t.Run("KillNode", func(t *testing.T) {
			const sessions = 300
			b := m.startBench(seq(1, 5), "--sessions", fmt.Sprint(sessions), "--duration", "14s", "--whoami-interval", "500ms")
			time.Sleep(4 * time.Second)
			m.node(3).cmd.Process.Kill()
			r, code := b.wait()
			logBench(t, r, code)
			passed(t, r, code, sessions)
			if r.SessionsMoved != 0 || r.BackendSetChange != 0 {
				t.Fatalf("%d sessions moved, %d set changes; want none: the backends did not change", r.SessionsMoved, r.BackendSetChange)
			}
			if r.Reconnects == 0 || r.Disconnects["eof"]+r.Disconnects["reset"] == 0 {
				t.Fatalf("%d reconnects, disconnects %v: the kill missed the load", r.Reconnects, r.Disconnects)
			}
			d := m.waitOneRing(30*time.Second, "the killed node dropped", []int{1, 2, 4, 5}, 3)
			t.Logf("killed node out of every view %v after the bench", d.Round(10*time.Millisecond))
		})

		// kill -9 of a backend: its sessions fail over at once and the
		// health quorum takes it out of every ring; the bench blames each
		// move on that set change, and no other backend's session moves.
		t.Run("KillBackend", func(t *testing.T) {
			const sessions, victim = 300, "web-2"
			live := []int{1, 2, 4, 5}
			b := m.startBench(live, "--sessions", fmt.Sprint(sessions), "--duration", "14s", "--whoami-interval", "500ms")
			time.Sleep(4 * time.Second)
			m.backend(victim).cmd.Process.Kill()
			r, code := b.wait()
			logBench(t, r, code)
			passed(t, r, code, sessions)
			if r.SessionsMoved == 0 || r.MovedSetChanged == 0 || r.BackendSetChange == 0 {
				t.Fatalf("%d moved, %d set_changed, %d set changes: the kill missed the load", r.SessionsMoved, r.MovedSetChanged, r.BackendSetChange)
			}
			if len(r.Moves) < r.MovedSetChanged {
				t.Fatalf("%d moves listed of %d", len(r.Moves), r.MovedSetChanged)
			}
			// A session may move twice (failover, then the ring without
			// the victim), but its first move must leave the victim.
			first := map[string]benchMove{}
			for _, mv := range r.Moves { // sorted by time
				if _, ok := first[mv.Session]; !ok {
					first[mv.Session] = mv
				}
			}
			for _, mv := range first {
				if mv.From != victim || mv.Kind != "set_changed" {
					t.Errorf("session %s moved %s -> %s (%s); only %s's sessions may move", mv.Session, mv.From, mv.To, mv.Kind, victim)
				}
			}
			if n := r.Backends[victim]; n != 0 {
				t.Errorf("%d sessions still on %s at the end", n, victim)
			}
			m.waitOneRing(30*time.Second, "the killed backend out of every ring", live, 2)
		})
	})

	// {n1,n2} | {n3,n4,n5} at the bridge for 40 s: each side declares the
	// other dead, yet both keep the same ring (it depends on the backends,
	// which both sides still reach), so no session moves. After the heal
	// the periodic re-join (30 s ± 25 %) merges the halves.
	t.Run("SymmetricPartition", func(t *testing.T) {
		t.Parallel()
		m := newNetMesh(t, 5, 3)
		m.waitOneRing(30*time.Second, "one ring", seq(1, 5), 3)
		const sessions = 200
		b := m.startBench(seq(1, 5), "--sessions", fmt.Sprint(sessions), "--duration", "150s")
		time.Sleep(3 * time.Second)
		if err := m.lab.Partition([]string{"n1", "n2"}, []string{"n3", "n4", "n5"}); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		time.Sleep(30 * time.Second)
		t.Logf("30 s into the partition: %s", m.views(seq(1, 5)))
		time.Sleep(time.Until(cut.Add(40 * time.Second)))
		if err := m.lab.Heal(); err != nil {
			t.Fatal(err)
		}
		d := m.waitOneRing(60*time.Second, "one ring within 60 s of the heal", seq(1, 5), 3)
		t.Logf("one ring on every node %v after the heal of a 40 s partition", d.Round(10*time.Millisecond))
		time.Sleep(3 * time.Second) // the bench sees the merged mesh
		b.stop()
		r, code := b.wait()
		logBench(t, r, code)
		passed(t, r, code, sessions)
		if r.SessionsMoved != 0 {
			t.Fatalf("%d sessions moved; want none: both sides kept every backend", r.SessionsMoved)
		}
	})

	// n1 drops everything from n2 for 20 s (n1's packets still reach n2).
	// memberlist's indirect probes through the other nodes may keep both
	// alive; the test records what each node saw and requires one ring
	// after the heal and no misroute throughout.
	t.Run("OneWayPartition", func(t *testing.T) {
		t.Parallel()
		m := newNetMesh(t, 5, 3)
		m.waitOneRing(30*time.Second, "one ring", seq(1, 5), 3)
		const sessions = 200
		b := m.startBench(seq(1, 5), "--sessions", fmt.Sprint(sessions), "--duration", "150s")
		time.Sleep(3 * time.Second)
		if err := m.lab.DropInput("n1", "n2"); err != nil {
			t.Fatal(err)
		}
		cut := time.Now()
		split := map[string]bool{}
		minMembers := map[string]int{}
		for time.Since(cut) < 20*time.Second {
			for _, i := range seq(1, 5) {
				s, err := getStatusVia(m.client, nodeAddr(i)+":"+adminPort)
				if err != nil {
					continue
				}
				h := nodeHost(i)
				if n, ok := minMembers[h]; !ok || len(s.Members) < n {
					minMembers[h] = len(s.Members)
				}
				split[h] = split[h] || !s.RingAgreed
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("during the one-way partition: fewest members seen %v; ring disagreement seen %v; at the heal: %s",
			minMembers, split, m.views(seq(1, 5)))
		if err := m.lab.Heal(); err != nil {
			t.Fatal(err)
		}
		d := m.waitOneRing(60*time.Second, "one ring within 60 s of the heal", seq(1, 5), 3)
		t.Logf("one ring on every node %v after the heal", d.Round(10*time.Millisecond))
		time.Sleep(3 * time.Second)
		b.stop()
		r, code := b.wait()
		logBench(t, r, code)
		passed(t, r, code, sessions)
		if r.SessionsMoved != 0 {
			t.Fatalf("%d sessions moved; want none: no backend changed", r.SessionsMoved)
		}
	})

	// A rolling restart: each node in turn gets SIGTERM, exits 0 and is
	// started again on its address. Its clients get a close frame (1001),
	// never a reset, and come back through another node to their backend.
	t.Run("RollingRestart", func(t *testing.T) {
		t.Parallel()
		m := newNetMesh(t, 3, 3)
		m.waitOneRing(30*time.Second, "one ring", seq(1, 3), 3)
		const sessions = 200
		b := m.startBench(seq(1, 3), "--sessions", fmt.Sprint(sessions), "--duration", "150s", "--whoami-interval", "500ms")
		time.Sleep(3 * time.Second)
		for i := 1; i <= 3; i++ {
			p := m.node(i)
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := p.wait(30 * time.Second); code != 0 {
				t.Fatalf("n%d exit %d after SIGTERM; want 0", i, code)
			}
			var join []string
			for j := 1; j <= 3; j++ {
				if j != i {
					join = append(join, nodeAddr(j)+":"+gossipPort)
				}
			}
			m.startNode(i, append(slices.Clone(m.flags), "--join", strings.Join(join, ","))...)
			d := m.waitOneRing(30*time.Second, "the restarted node back in one ring", seq(1, 3), 3)
			t.Logf("n%d restarted, one ring again %v after its start", i, d.Round(10*time.Millisecond))
			time.Sleep(2 * time.Second)
		}
		b.stop()
		r, code := b.wait()
		logBench(t, r, code)
		passed(t, r, code, sessions)
		closes := r.CloseCodes["1001"] + r.CloseCodes["1012"]
		if r.SessionsMoved != 0 || r.Resets != 0 || r.Disconnects["eof"] != 0 || closes == 0 {
			t.Fatalf("%d moved, disconnects %v; want no move, and close frames only", r.SessionsMoved, r.Disconnects)
		}
	})

	// SIGSTOP of a node for 10 s: a GC pause or a stuck VM. Its sessions
	// time out and reconnect elsewhere to the same backend; the others
	// declare it dead, and after SIGCONT it refutes that and is back.
	t.Run("FreezeNode", func(t *testing.T) {
		t.Parallel()
		m := newNetMesh(t, 5, 3)
		m.waitOneRing(30*time.Second, "one ring", seq(1, 5), 3)
		const sessions = 200
		b := m.startBench(seq(1, 5), "--sessions", fmt.Sprint(sessions), "--duration", "150s", "--whoami-interval", "500ms")
		time.Sleep(3 * time.Second)
		pid := m.node(4).cmd.Process.Pid
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		t.Logf("after 10 s frozen: %s", m.views([]int{1, 2, 3, 5}))
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		d := m.waitOneRing(60*time.Second, "one ring after SIGCONT", seq(1, 5), 3)
		t.Logf("one ring on every node %v after SIGCONT", d.Round(10*time.Millisecond))
		time.Sleep(5 * time.Second) // sessions keep asking through the thawed node
		b.stop()
		r, code := b.wait()
		logBench(t, r, code)
		passed(t, r, code, sessions)
		if r.SessionsMoved != 0 || r.Reconnects == 0 {
			t.Fatalf("%d sessions moved, %d reconnects; want the frozen node's sessions back on their backends", r.SessionsMoved, r.Reconnects)
		}
	})
}
