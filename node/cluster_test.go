package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
	"github.com/meshlb/meshlb/internal/testlog"
)

// memberlist's probeNode may still wait out its ack timer (a probe
// interval at most) after Shutdown returns; it exits on its own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// testConfig is a node on loopback with ephemeral ports and fast gossip.
func testConfig(t testing.TB, name string, seeds ...string) Config {
	g := gossip.LocalConfig()
	g.Seeds = seeds
	return Config{
		Name:       name,
		ListenAddr: "127.0.0.1:0",
		AdminAddr:  "127.0.0.1:0",
		Gossip:     g,
		Logger:     zerolog.New(testlog.Writer(t)).Level(zerolog.WarnLevel),
		// Stop at once: these tests are about the mesh, not the drain.
		DrainDelay:  -1,
		DrainSpread: -1,
		// Their backends are addresses nobody listens on: health, tested
		// on its own, must not take them out.
		HealthPolicy: health.Policy{MaxEjectPercent: health.NoEjection},
	}
}

// startNode starts a node and stops it (gracefully) when the test ends.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNode(n) })
	return n
}

func stopNode(n *Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.Shutdown(ctx)
}

// newTestCluster starts size nodes; every node after the first joins the
// first. tweak, if not nil, edits each node's config.
func newTestCluster(t testing.TB, size int, tweak func(i int, c *Config)) []*Node {
	t.Helper()
	nodes := make([]*Node, 0, size)
	for i := range size {
		var seeds []string
		if i > 0 {
			seeds = []string{nodes[0].GossipAddr()}
		}
		cfg := testConfig(t, fmt.Sprintf("n%d", i), seeds...)
		if tweak != nil {
			tweak(i, &cfg)
		}
		nodes = append(nodes, startNode(t, cfg))
	}
	return nodes
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s: %s", timeout, what, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// converged: every node sees want members, has a ring of wantBackends, and
// reports that all agree.
func converged(nodes []*Node, wantBackends int) func() (bool, string) {
	return func() (bool, string) {
		var fp string
		for _, n := range nodes {
			s := n.Status()
			switch {
			case len(s.Members) != len(nodes):
				return false, fmt.Sprintf("%s sees %d members", n.Name(), len(s.Members))
			case s.Ring.Backends != wantBackends:
				return false, fmt.Sprintf("%s has %d backends", n.Name(), s.Ring.Backends)
			case !s.RingAgreed || !s.ConfigAgreed:
				return false, fmt.Sprintf("%s: ring agreed %v, config agreed %v", n.Name(), s.RingAgreed, s.ConfigAgreed)
			case fp != "" && s.Ring.Fingerprint != fp:
				return false, fmt.Sprintf("%s has ring %s, others %s", n.Name(), s.Ring.Fingerprint, fp)
			}
			fp = s.Ring.Fingerprint
		}
		return true, ""
	}
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

func call(t testing.TB, method, url string, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // auth.go wants it on changes
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func adminURL(n *Node, path string) string { return "http://" + n.AdminAddr() + path }

// routes asks every node's /v1/route for every key and fails unless all
// answers agree; it returns the answers of the first node.
func routes(t *testing.T, nodes []*Node, keys []string) map[string]RouteAnswer {
	t.Helper()
	answers := make([]map[string]RouteAnswer, len(nodes))
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes))
	for i, n := range nodes {
		answers[i] = make(map[string]RouteAnswer, len(keys))
		wg.Go(func() {
			for _, k := range keys {
				resp, err := client.Get(adminURL(n, "/v1/route?key="+url.QueryEscape(k)))
				if err != nil {
					errs <- err
					return
				}
				var a RouteAnswer
				err = json.NewDecoder(resp.Body).Decode(&a)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					errs <- fmt.Errorf("%s: route %q: status %d, %v", n.Name(), k, resp.StatusCode, err)
					return
				}
				answers[i][k] = a
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := 1; i < len(nodes); i++ {
		for _, k := range keys {
			if a, b := answers[0][k], answers[i][k]; a != b {
				t.Fatalf("key %q: %s says %+v, %s says %+v", k, nodes[0].Name(), a, nodes[i].Name(), b)
			}
		}
	}
	return answers[0]
}

func testKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		if i%2 == 0 {
			keys[i] = fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		} else {
			keys[i] = fmt.Sprintf("session-%08x", i*2654435761)
		}
	}
	return keys
}

// The mesh's promise: backends added through different nodes, in different
// orders, give every node the same ring and the same answer for every key;
// a removal, made on yet another node, too.
func TestMeshRoutesAlike(t *testing.T) {
	nodes := newTestCluster(t, 5, nil)
	waitFor(t, 15*time.Second, "members", func() (bool, string) {
		for _, n := range nodes {
			if m := len(n.Status().Members); m != len(nodes) {
				return false, fmt.Sprintf("%s sees %d members", n.Name(), m)
			}
		}
		return true, ""
	})

	backends := []string{"web-1=127.0.0.1:9001", "web-11=127.0.0.1:9002", "10.0.0.1:80", "10.0.0.11:80", "10.0.0.1:801", "[::1]:8080"}
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			// Each node adds every backend, starting at a different one.
			for j := range backends {
				spec, _ := ParseBackendSpec(backends[(i+j)%len(backends)])
				body := fmt.Sprintf(`{"id": %q, "addr": %q}`, spec.ID, spec.Addr)
				if code, b := call(t, "POST", adminURL(n, "/v1/backends"), body); code != 200 {
					t.Errorf("add %s on %s: %d %s", spec.ID, n.Name(), code, b)
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, 15*time.Second, "one ring with 6 backends", converged(nodes, len(backends)))

	keys := testKeys(10000)
	before := routes(t, nodes, keys)

	if code, b := call(t, "DELETE", adminURL(nodes[3], "/v1/backends/10.0.0.11:80"), ""); code != 200 {
		t.Fatalf("remove: %d %s", code, b)
	}
	waitFor(t, 15*time.Second, "one ring with 5 backends", converged(nodes, len(backends)-1))
	after := routes(t, nodes, keys)

	// Only the removed backend's keys moved.
	moved := 0
	for _, k := range keys {
		if before[k].Backend != after[k].Backend {
			moved++
			if before[k].Backend != "10.0.0.11:80" {
				t.Errorf("key %q moved from %s to %s though its backend stayed", k, before[k].Backend, after[k].Backend)
			}
		}
	}
	if moved == 0 {
		t.Error("no key moved when a backend was removed")
	}
}

func TestCrashedNodeIsDroppedAndRejoins(t *testing.T) {
	nodes := newTestCluster(t, 5, func(i int, c *Config) {
		if i == 0 {
			c.Backends = []BackendSpec{{ID: "a", Addr: "127.0.0.1:9001"}, {ID: "b", Addr: "127.0.0.1:9002"}}
		}
	})
	waitFor(t, 15*time.Second, "converged", converged(nodes, 2))

	victim := nodes[4]
	gossipAddr := victim.GossipAddr()
	crashForTest(victim)
	survivors := nodes[:4]
	waitFor(t, 20*time.Second, "survivors drop the crashed node", converged(survivors, 2))

	cfg := testConfig(t, "n4", nodes[0].GossipAddr())
	cfg.Gossip.BindAddr = gossipAddr
	restarted := startNode(t, cfg)
	all := append(append([]*Node(nil), survivors...), restarted)
	waitFor(t, 20*time.Second, "restarted node back in one mesh", converged(all, 2))
	routes(t, all, testKeys(500))
}

// crashForTest stops a node the way kill -9 would look to its peers: no
// leave, sockets gone.
func crashForTest(n *Node) {
	n.shutdownOnce.Do(func() {
		n.cancel()
		n.adminSrv.Close()
		n.proxySrv.Close()
		_ = n.cluster.Shutdown()
		n.wg.Wait()
		n.decider.Shutdown()
		n.checker.Close()
	})
}

func TestGracefulLeaveIsNotRejoined(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	waitFor(t, 15*time.Second, "members", func() (bool, string) {
		return len(nodes[0].Status().Members) == 3, "waiting"
	})
	stopNode(nodes[2])
	waitFor(t, 10*time.Second, "leaver dropped", func() (bool, string) {
		return len(nodes[0].Status().Members) == 2 && len(nodes[1].Status().Members) == 2, "still listed"
	})
	// Several rejoin periods later it is still gone (no resurrection).
	time.Sleep(3 * gossip.LocalConfig().RejoinInterval)
	if m := len(nodes[1].Status().Members); m != 2 {
		t.Fatalf("members = %d after a graceful leave; want 2", m)
	}
}

func TestConfigDisagreementIsReported(t *testing.T) {
	nodes := newTestCluster(t, 3, func(i int, c *Config) {
		c.Backends = []BackendSpec{{ID: "a", Addr: "127.0.0.1:9001"}}
		if i == 2 {
			c.Ring.Seed = "another secret"
		}
	})
	waitFor(t, 15*time.Second, "disagreement seen everywhere", func() (bool, string) {
		for _, n := range nodes {
			s := n.Status()
			if len(s.Members) != 3 || s.ConfigAgreed || s.RingAgreed {
				return false, fmt.Sprintf("%s: members %d config agreed %v", n.Name(), len(s.Members), s.ConfigAgreed)
			}
		}
		return true, ""
	})
}

func TestEncryptedMeshKeepsOutsiders(t *testing.T) {
	key := []byte("0123456789abcdef")
	nodes := newTestCluster(t, 2, func(i int, c *Config) { c.Gossip.SecretKey = key })
	waitFor(t, 10*time.Second, "members", func() (bool, string) {
		return len(nodes[1].Status().Members) == 2, "waiting"
	})
	outsider := startNode(t, testConfig(t, "outsider", nodes[0].GossipAddr()))
	time.Sleep(time.Second)
	if m := len(nodes[0].Status().Members); m != 2 {
		t.Fatalf("members = %d; a node without the key got in", m)
	}
	if ok, _ := outsider.Ready(); ok {
		t.Fatal("a node kept out of the mesh says it is ready")
	}
}

func TestPortInUseFailsFast(t *testing.T) {
	first := startNode(t, testConfig(t, "first"))
	cfg := testConfig(t, "second")
	cfg.AdminAddr = first.AdminAddr()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = n.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), first.AdminAddr()) {
		t.Fatalf("err = %v; want 'already in use' naming %s", err, first.AdminAddr())
	}

	cfg = testConfig(t, "third")
	cfg.Gossip.BindAddr = first.GossipAddr()
	n, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil {
		stopNode(n)
		t.Fatal("a node started on a gossip port in use")
	}
}
