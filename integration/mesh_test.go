package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Five processes started with only a seed address form one mesh with one
// ring; every node's CLI routes keys alike; a SIGTERM'd node leaves at once
// and exits 0.
func TestMeshFromSeed(t *testing.T) {
	t.Parallel()
	// Real backends: health checks would take addresses nobody listens
	// on out of the ring.
	var addrs []string
	for i := 1; i <= 3; i++ {
		_, addr := startEcho(t, fmt.Sprintf("web-%d", i))
		addrs = append(addrs, addr)
	}
	seed, s0 := startNode(t, "n0", "--backend", "web-1="+addrs[0], "--backend", "web-2="+addrs[1])
	procs := []*proc{seed}
	admins := []string{s0.AdminAddr}
	for i := 1; i < 5; i++ {
		p, s := startNode(t, fmt.Sprintf("n%d", i), "--join", s0.GossipAddr)
		procs = append(procs, p)
		admins = append(admins, s.AdminAddr)
	}
	waitFor(t, 30*time.Second, "one mesh, one ring", oneRing(admins, 5, 2))

	// A backend added through the last node reaches every ring.
	if out, errOut, code := cli(t, "backends", "add", "web-3="+addrs[2], "--admin-url", "http://"+admins[4]); code != 0 {
		t.Fatalf("backends add: exit %d: %s%s", code, out, errOut)
	}
	waitFor(t, 15*time.Second, "third backend everywhere", oneRing(admins, 5, 3))

	for _, key := range []string{"alice", "bob", "203.0.113.9", "0f1e2d3c4b5a69788796a5b4c3d2e1f0"} {
		var first string
		for _, a := range admins {
			out, errOut, code := cli(t, "route", key, "--admin-url", "http://"+a)
			if code != 0 {
				t.Fatalf("route %s on %s: exit %d: %s", key, a, code, errOut)
			}
			if first == "" {
				first = out
			} else if out != first {
				t.Fatalf("route %s: %q from one node, %q from another", key, first, out)
			}
		}
	}

	// Graceful stop: exit 0, and the others drop the node well before a
	// crash would be detected.
	if err := procs[2].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := procs[2].wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d; want 0", code)
	}
	rest := []string{admins[0], admins[1], admins[3], admins[4]}
	waitFor(t, 3*time.Second, "leaver dropped", oneRing(rest, 4, 3))

	// kill -9: the survivors drop the node once failure detection says so.
	procs[4].cmd.Process.Kill()
	procs[4].wait(5 * time.Second)
	waitFor(t, 20*time.Second, "crashed node dropped", oneRing(rest[:3], 3, 3))
}

func TestBadInputExitsTwoAndNamesIt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("listen: 127.0.0.1:0\nlisen: 127.0.0.1:1\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--bogus"}, "bogus"},
		{[]string{"node", "--listen", "nowhere"}, "--listen"},
		{[]string{"node", "--gossip-key", "c2hvcnQ="}, "--gossip-key"},
		{[]string{"node", "--ring-load", "0.5", "--name", "x"}, "load"},
		{[]string{"node", "--name", "x", "--affinity-cookie", "srv"}, "--gossip-key"},
		{[]string{"node", "--name", "x", "--backend", "a=127.0.0.1:1,colour=x"}, "allowed: pool, weight"},
		{[]string{"node", "--config", badYAML}, `"lisen"`},
		{[]string{"frobnicate"}, "frobnicate"},
		{[]string{"route"}, "KEY"},
		{[]string{"backends", "add", "nohostport"}, "nohostport"},
		{[]string{"bench"}, "no nodes"},
		{[]string{"bench", "--nodes", "127.0.0.1:1", "--source-ips", "127.0.0.9-127.0.0.1"}, "--source-ips"},
		{[]string{"bench", "--nodes", "127.0.0.1:1", "--sessions", "0"}, "--sessions"},
	} {
		_, errOut, code := cli(t, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("meshlb %v: exit %d, stderr %q; want exit 2 naming %q", tc.args, code, errOut, tc.want)
		}
	}
	for _, cmd := range [][]string{{"--help"}, {"node", "--help"}, {"status", "--help"}, {"backends", "--help"}, {"bench", "--help"}} {
		out, errOut, code := cli(t, cmd...)
		if code != 0 || !strings.Contains(out+errOut, "Usage: meshlb") {
			t.Errorf("meshlb %v: exit %d; want 0 and a usage text", cmd, code)
		}
	}
}

func TestPortInUseFailsFast(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	p := run(t, "busy", "node", "--name", "busy", "--log-format", "json", "--gossip-addr", "127.0.0.1:0",
		"--listen", "127.0.0.1:0", "--admin", ln.Addr().String())
	if code := p.wait(10 * time.Second); code != 1 {
		t.Fatalf("exit code = %d; want 1", code)
	}
	if !strings.Contains(p.output(), "already in use") || !strings.Contains(p.output(), ln.Addr().String()) {
		t.Fatalf("output does not say which address is in use:\n%s", p.output())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v to fail", d)
	}
}

func TestAdminUnreachableExitsOne(t *testing.T) {
	t.Parallel()
	_, errOut, code := cli(t, "status", "--admin-url", "http://127.0.0.1:1", "--timeout", "2s")
	if code != 1 || !strings.Contains(errOut, "unreachable") {
		t.Fatalf("exit %d, stderr %q; want 1 and 'unreachable'", code, errOut)
	}
}
