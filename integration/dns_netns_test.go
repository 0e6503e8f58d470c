//go:build linux

package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

const dnsName = "ws.example.com"

// dnsFlags make every node answer dnsName on port 53 of its host.
var dnsFlags = []string{"--dns-listen", ":53", "--dns-name", dnsName}

func needDig(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dig"); err != nil {
		t.Skip("dig not found: skipping the DNS tests (CI installs bind9-dnsutils)")
	}
}

// dig asks node i, from the client host, for dnsName's records of type
// qtype with Debian's dig, and returns the sorted answers.
func (m *netMesh) dig(i int, qtype string) ([]string, error) {
	out, err := m.lab.Command("c", "dig", "+short", "+tries=1", "+time=1", "@"+nodeAddr(i), dnsName, qtype).Output()
	if err != nil {
		return nil, fmt.Errorf("dig @%s: %v", nodeAddr(i), err)
	}
	ips := strings.Fields(string(out))
	slices.Sort(ips)
	return ips, nil
}

// answers asks nodes is at once; a node that fails to answer maps to nil.
func (m *netMesh) answers(is []int) map[int][]string {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := make(map[int][]string, len(is))
	for _, i := range is {
		wg.Go(func() {
			ips, err := m.dig(i, "A")
			if err != nil {
				ips = nil
			}
			mu.Lock()
			out[i] = ips
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func nodeAddrs(is []int) []string {
	var out []string
	for _, i := range is {
		out = append(out, nodeAddr(i))
	}
	slices.Sort(out)
	return out
}

// pollUntil asks nodes is over and over until ok holds for every answer,
// and returns when the round that showed it ended.
func (m *netMesh) pollUntil(timeout time.Duration, what string, is []int, ok func(ips []string) bool) time.Time {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ans := m.answers(is)
		done := true
		for _, i := range is {
			if !ok(ans[i]) {
				done = false
			}
		}
		if done {
			return time.Now()
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("after %v: %s: answers %v", timeout, what, ans)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nodeArgs are node i's flags: everyone's, and the seed for all but n1.
func (m *netMesh) nodeArgs(i int) []string {
	args := slices.Clone(m.flags)
	if i > 1 {
		args = append(args, "--join", nodeAddr(1)+":"+gossipPort)
	}
	return args
}

// waitReady polls node i's /readyz and returns when it first said 200.
func (m *netMesh) waitReady(i int, timeout time.Duration) time.Time {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := m.client.Get("http://" + nodeAddr(i) + ":" + adminPort + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Now()
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.t.Fatalf("%s not ready after %v", nodeHost(i), timeout)
	return time.Time{}
}

// useMeshResolvers makes the nodes the client host's resolvers: ip netns
// exec bind-mounts /etc/netns/NS/resolv.conf over /etc/resolv.conf.
func (m *netMesh) useMeshResolvers(is []int) {
	m.t.Helper()
	h, _ := m.lab.Host("c")
	dir := filepath.Join("/etc/netns", h.NS)
	var b strings.Builder
	for _, a := range nodeAddrs(is) {
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	// A dead node's port 53 answers with an ICMP unreachable at once, a
	// frozen one not at all: one second, then the next server.
	b.WriteString("options timeout:1 attempts:2 rotate\n")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(b.String()), 0o644); err != nil {
		m.t.Fatal(err)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// Five nodes, each on its own host, answer DNS for their mesh; a client
// host asks them with dig and with Go's resolver. What is measured here
// is what the issue promises: the same set from every node; a killed node
// out of every answer within memberlist's failure detection (at most
// 5 s); a SIGTERMed node out of every answer before its first WebSocket
// is closed; a new node in every answer within a second of being ready.
// MESHLB_DNS_KILLS=10 repeats the kill (default 2) for the figures.
func TestNetnsDNS(t *testing.T) {
	needNetns(t)
	needDig(t)
	m := newNetMesh(t, 5, 2, dnsFlags...)
	all := seq(1, 5)

	t.Run("SameSetFromEveryNode", func(t *testing.T) {
		m.waitOneRing(30*time.Second, "5 nodes on one ring", all, 2)
		m.pollUntil(10*time.Second, "every node answers all five", all, func(ips []string) bool { return slices.Equal(ips, nodeAddrs(all)) })
		// Go's own resolver, asking each node in turn.
		for _, i := range all {
			r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return m.lab.Dialer("c")(ctx, network, nodeAddr(i)+":53")
			}}
			got, err := r.LookupHost(context.Background(), dnsName)
			slices.Sort(got)
			if err != nil || !slices.Equal(got, nodeAddrs(all)) {
				t.Fatalf("Go resolver via %s: %v, %v; want %v", nodeHost(i), got, err, nodeAddrs(all))
			}
		}
		// The client host's own resolver configuration, as any program
		// there would use it.
		m.useMeshResolvers(all)
		out, err := m.lab.Command("c", "getent", "ahostsv4", dnsName).Output()
		if err != nil || !strings.Contains(string(out), nodeAddr(1)) {
			t.Fatalf("getent through resolv.conf: %q, %v", out, err)
		}
		for _, tc := range []struct{ name, qtype, status string }{
			{dnsName, "SOA", "NOERROR"}, {dnsName, "NS", "NOERROR"}, {dnsName, "AAAA", "NOERROR"},
			{"nope." + dnsName, "A", "NXDOMAIN"}, {"example.org", "A", "REFUSED"},
		} {
			out, _ := m.lab.Command("c", "dig", "+tries=1", "+time=1", "@"+nodeAddr(2), tc.name, tc.qtype).Output()
			if !strings.Contains(string(out), "status: "+tc.status) {
				t.Errorf("dig %s %s: want %s\n%s", tc.name, tc.qtype, tc.status, out)
			}
		}
		out, _ = m.lab.Command("c", "dig", "+tcp", "+short", "@"+nodeAddr(3), dnsName, "A").Output()
		if got := strings.Fields(string(out)); len(got) != 5 {
			t.Errorf("over TCP: %q; want 5 addresses", out)
		}
	})

	t.Run("KillAndRejoin", func(t *testing.T) {
		kills := envInt("MESHLB_DNS_KILLS", 2)
		var outs, joins []time.Duration
		for k := range kills {
			victim := 2 + k%4
			others := slices.DeleteFunc(slices.Clone(all), func(i int) bool { return i == victim })
			p := m.node(victim)
			p.cmd.Process.Kill()
			killed := time.Now()
			gone := m.pollUntil(15*time.Second, "killed node out of every answer", others, func(ips []string) bool {
				return len(ips) > 0 && !slices.Contains(ips, nodeAddr(victim))
			})
			outs = append(outs, gone.Sub(killed))
			<-p.exited

			m.startNode(victim, m.nodeArgs(victim)...)
			ready := m.waitReady(victim, 30*time.Second)
			in := m.pollUntil(15*time.Second, "restarted node in every answer", all, func(ips []string) bool {
				return slices.Contains(ips, nodeAddr(victim))
			})
			joins = append(joins, in.Sub(ready))
			t.Logf("kill %d (%s): out of every answer %v after the kill; back in every answer %v after /readyz said ready",
				k+1, nodeHost(victim), gone.Sub(killed).Round(10*time.Millisecond), in.Sub(ready).Round(10*time.Millisecond))
		}
		t.Logf("kill -> out of answers over %d kills: p50 %v, max %v", kills, pct(outs, 50), pct(outs, 100))
		t.Logf("ready -> in answers over %d joins: p50 %v, max %v", kills, pct(joins, 50), pct(joins, 100))
		if mx := pct(outs, 100); mx > 5*time.Second {
			t.Errorf("a killed node stayed in answers %v; want at most 5s", mx)
		}
		if mx := pct(joins, 100); mx > time.Second {
			t.Errorf("a ready node took %v to enter every answer; want at most 1s", mx)
		}
	})

	t.Run("DrainLeavesAnswersBeforeClosing", func(t *testing.T) {
		const victim = 3
		others := []int{1, 2, 4, 5}
		m.pollUntil(15*time.Second, "every node answers all five", all, func(ips []string) bool { return slices.Equal(ips, nodeAddrs(all)) })
		d := ws.Dialer{NetDial: m.lab.Dialer("c"), Timeout: 5 * time.Second}
		conn, _, _, err := d.Dial(context.Background(), "ws://"+nodeAddr(victim)+":"+proxyPort+"/?session_id=drain-dns")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		closed := make(chan time.Time, 1)
		go func() {
			for {
				if _, _, err := wsutil.ReadServerData(conn); err != nil {
					closed <- time.Now()
					return
				}
			}
		}()
		if err := m.node(victim).cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		term := time.Now()
		gone := m.pollUntil(10*time.Second, "draining node out of every answer", others, func(ips []string) bool {
			return len(ips) == 4 && !slices.Contains(ips, nodeAddr(victim))
		})
		var closeAt time.Time
		select {
		case closeAt = <-closed:
		case <-time.After(15 * time.Second):
			t.Fatal("the drain never closed the WebSocket")
		}
		t.Logf("SIGTERM -> out of every answer %v; SIGTERM -> first WebSocket closed %v",
			gone.Sub(term).Round(time.Millisecond), closeAt.Sub(term).Round(time.Millisecond))
		if !gone.Before(closeAt) {
			t.Fatalf("out of the answers %v after SIGTERM, WebSocket closed at %v: want out before the close", gone.Sub(term), closeAt.Sub(term))
		}
	})
}

// pct is the p-th percentile of ds (p = 100: the maximum).
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))].Round(10 * time.Millisecond)
}

// The same chaos run (kill -9, SIGTERM drain, restarts) twice through a
// bench on the client host: once given the static list of every node, as
// a hand-kept DNS zone would be, once given only ws.example.com:PORT and
// the nodes as its resolvers. Both must see no misroute; the DNS run
// should meet fewer connection errors. Slow (two 45 s runs): only with
// MESHLB_DNS_BENCH=1 (make bench-dns).
func TestNetnsDNSBench(t *testing.T) {
	if os.Getenv("MESHLB_DNS_BENCH") == "" {
		t.Skip("set MESHLB_DNS_BENCH=1 (make bench-dns): two 45 s chaos runs")
	}
	needNetns(t)
	needDig(t)
	m := newNetMesh(t, 5, 3, dnsFlags...)
	all := seq(1, 5)
	m.waitOneRing(30*time.Second, "5 nodes on one ring", all, 3)
	m.useMeshResolvers(all)
	proxies, admins := addrs(all)
	// New sessions arrive all through the run (600 at 15 a second), as
	// new clients do: a session reconnecting from a failed node avoids
	// that node anyway, so only arrivals show what DNS changes.
	sessions := envInt("MESHLB_DNS_BENCH_SESSIONS", 600)
	results := map[string]benchReport{}
	for _, mode := range []string{"static", "dns"} {
		m.pollUntil(30*time.Second, "every node answers all five", all, func(ips []string) bool { return slices.Equal(ips, nodeAddrs(all)) })
		argv := []string{binary, "bench", "--json", "--log-level", "info", "--seed", "7",
			"--admin", strings.Join(admins, ","), "--wait-ready", "30s", "--wait-members", "5",
			"--sessions", strconv.Itoa(sessions), "--rate", "15", "--duration", "45s", "--whoami-interval", "1s", "--max-error-rate", "0.5"}
		if mode == "static" {
			argv = append(argv, "--nodes", strings.Join(proxies, ","))
		} else {
			argv = append(argv, "--target", dnsName+":"+proxyPort)
		}
		b := m.runBench(argv)
		start := time.Now()
		at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
		kill := func(i int) { p := m.node(i); p.cmd.Process.Kill(); <-p.exited }
		term := func(i int) { m.node(i).cmd.Process.Signal(syscall.SIGTERM) }
		restart := func(i int) { <-m.node(i).exited; m.startNode(i, m.nodeArgs(i)...) }
		at(5 * time.Second)
		kill(2)
		at(9 * time.Second)
		restart(2)
		at(14 * time.Second)
		term(3)
		at(24 * time.Second)
		restart(3)
		at(28 * time.Second)
		kill(4)
		at(32 * time.Second)
		restart(4)
		r, code := b.wait()
		logBench(t, r, code)
		if r.Misroutes != 0 || !r.BackendSetKnown {
			t.Errorf("%s: %d misroutes, set known %v; want none", mode, r.Misroutes, r.BackendSetKnown)
		}
		results[mode] = r
	}
	connErrs := func(r benchReport) int {
		n := 0
		for k, v := range r.Errors {
			if strings.HasPrefix(k, "connect") || strings.HasPrefix(k, "handshake") || strings.HasPrefix(k, "dial") {
				n += v
			}
		}
		return n
	}
	s, d := results["static"], results["dns"]
	t.Logf("connection errors: static list %d (%v), mesh DNS %d (%v)", connErrs(s), s.Errors, connErrs(d), d.Errors)
	if connErrs(d) >= connErrs(s) {
		t.Errorf("mesh DNS met %d connection errors, the static list %d: want fewer", connErrs(d), connErrs(s))
	}
}
