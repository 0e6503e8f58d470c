package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/internal/demo"
	"github.com/meshlb/meshlb/internal/testlog"
	"github.com/meshlb/meshlb/node"
)

// testMesh is nodes in front of echo backends, all in this process.
type testMesh struct {
	nodes    []*node.Node
	backends []*demo.Echo
}

func startEcho(t *testing.T, id string) *demo.Echo {
	t.Helper()
	e := &demo.Echo{ID: id}
	if err := e.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopEcho(e) })
	return e
}

// stopEcho shuts a backend down; a second call is harmless.
func stopEcho(e *demo.Echo) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Shutdown(ctx)
}

func stopNode(n *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Shutdown(ctx)
}

// startMesh starts b echo backends web-1..web-b and n nodes that list them
// all, joined through the first, and waits until every node routes with
// the same ring.
func startMesh(t *testing.T, n, b int) *testMesh {
	t.Helper()
	m := &testMesh{}
	var specs []node.BackendSpec
	for j := 1; j <= b; j++ {
		e := startEcho(t, fmt.Sprintf("web-%d", j))
		m.backends = append(m.backends, e)
		specs = append(specs, node.BackendSpec{ID: e.ID, Addr: e.Addr()})
	}
	for i := range n {
		g := gossip.LocalConfig()
		if i > 0 {
			g.Seeds = []string{m.nodes[0].GossipAddr()}
		}
		nd, err := node.New(node.Config{
			Name: fmt.Sprintf("n%d", i), ListenAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
			Backends: specs, Gossip: g,
			Logger: zerolog.New(testlog.Writer(t)).Level(zerolog.ErrorLevel),
			// Close drained WebSockets at once: these tests are about the
			// client coming back, not about the drain's pacing.
			DrainDelay: -1, DrainSpread: -1,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := nd.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { stopNode(nd) })
		m.nodes = append(m.nodes, nd)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, why := true, ""
		var fp string
		for _, nd := range m.nodes {
			s := nd.Status()
			switch {
			case len(s.Members) != n || s.Ring.Backends != b || !s.RingAgreed:
				ok, why = false, fmt.Sprintf("%s: %d members, %d backends, agreed %v", nd.Name(), len(s.Members), s.Ring.Backends, s.RingAgreed)
			case fp != "" && fp != s.Ring.Fingerprint:
				ok, why = false, "rings differ"
			}
			fp = s.Ring.Fingerprint
		}
		if ok {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("mesh did not converge: %s", why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *testMesh) proxies() []string {
	var out []string
	for _, n := range m.nodes {
		out = append(out, n.ProxyAddr())
	}
	return out
}

func (m *testMesh) admins() []string {
	var out []string
	for _, n := range m.nodes {
		out = append(out, n.AdminAddr())
	}
	return out
}

// quick is a short run with fast polling, generous timeouts and a fixed
// seed, for tests on a shared 2-core machine.
func quick(nodes, admins []string) Config {
	return Config{
		Nodes: nodes, Admin: admins,
		Sessions: 40, Duration: 4 * time.Second, Rate: 200,
		WhoamiInterval: 150 * time.Millisecond, PollInterval: 100 * time.Millisecond,
		ConnectTimeout: 10 * time.Second, RequestTimeout: 10 * time.Second,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		Seed: 7,
	}
}

// runBench runs cfg, calling during (if not nil) in its own goroutine
// after delay, and returns the judged report.
func runBench(t *testing.T, cfg Config, delay time.Duration, during func()) *Report {
	t.Helper()
	cfg.Logger = zerolog.New(testlog.Writer(t)).Level(zerolog.WarnLevel)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	if during != nil {
		wg.Go(func() {
			time.Sleep(delay)
			during()
		})
	}
	r, err := b.Run(context.Background())
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	r.Judge(0.01)
	var sum bytes.Buffer
	r.WriteSummary(&sum)
	t.Logf("summary:\n%s", sum.String())
	return r
}

// Through a healthy mesh every session keeps its backend and the checker
// says so.
func TestBenchHealthyMeshPasses(t *testing.T) {
	m := startMesh(t, 3, 3)
	cfg := quick(m.proxies(), m.admins()[:1])
	cfg.WaitReady, cfg.WaitMembers = 20*time.Second, 3
	r := runBench(t, cfg, 0, nil)
	if r.Verdict != "pass" || r.Misroutes != 0 || r.SessionsMoved != 0 {
		t.Fatalf("verdict %s, %d misroutes, %d moved: %v", r.Verdict, r.Misroutes, r.SessionsMoved, r.Reasons)
	}
	if r.Sessions != 40 || r.SessionsAnswered != 40 || len(r.Backends) != 3 {
		t.Fatalf("%d sessions, %d answered, backends %v; want 40, 40 and all three", r.Sessions, r.SessionsAnswered, r.Backends)
	}
	if !r.BackendSetKnown || r.BackendSetChange != 0 || len(r.BackendSets) != 1 || len(r.BackendSets[0].Backends) != 3 {
		t.Fatalf("backend set known %v, %d changes, sets %v", r.BackendSetKnown, r.BackendSetChange, r.BackendSets)
	}
	if r.Handshake.Count != r.Connects || r.Echo.Count == 0 || r.Echo.P50 <= 0 || r.Echo.Max < r.Echo.P99 {
		t.Fatalf("latencies: handshake %+v (connects %d), echo %+v", r.Handshake, r.Connects, r.Echo)
	}
	if r.Reconnects != 0 || len(r.Errors) != 0 {
		t.Fatalf("%d reconnects, errors %v in a quiet run", r.Reconnects, r.Errors)
	}
}

// A node drains mid-run: its sessions get 1001, reconnect through another
// node and reach the same backend. No move, no misroute.
func TestBenchNodeDrainSessionsComeBack(t *testing.T) {
	m := startMesh(t, 3, 3)
	cfg := quick(m.proxies(), m.admins()[1:])
	r := runBench(t, cfg, 1500*time.Millisecond, func() { stopNode(m.nodes[0]) })
	if r.Verdict != "pass" || r.SessionsMoved != 0 {
		t.Fatalf("verdict %s, %d sessions moved: %v", r.Verdict, r.SessionsMoved, r.Reasons)
	}
	if r.CloseCodes["1001"] == 0 || r.Reconnects < r.CloseCodes["1001"] {
		t.Fatalf("close codes %v, %d reconnects; want 1001s, each followed by a reconnect", r.CloseCodes, r.Reconnects)
	}
	if r.SessionsAnswered != r.Sessions {
		t.Fatalf("%d of %d sessions answered", r.SessionsAnswered, r.Sessions)
	}
}

// A backend dies mid-run: its sessions fail over to the ring's next
// candidate. The probe sees the backend go, so the moves are blamed on the
// set change, not counted as misroutes.
func TestBenchBackendDeathIsAMoveNotAMisroute(t *testing.T) {
	m := startMesh(t, 2, 3)
	cfg := quick(m.proxies(), m.admins())
	cfg.ProbeBackends = true
	r := runBench(t, cfg, 1500*time.Millisecond, func() { stopEcho(m.backends[0]) })
	if r.Misroutes != 0 || r.MovedSetChanged == 0 || r.Verdict != "pass" {
		t.Fatalf("%d misroutes, %d moved with the set; verdict %s %v", r.Misroutes, r.MovedSetChanged, r.Verdict, r.Reasons)
	}
	for _, mv := range r.Moves {
		if mv.From != "web-1" || mv.Kind != MoveSetChanged {
			t.Fatalf("move %+v; only web-1's sessions should move, with the set", mv)
		}
	}
	if r.BackendSetChange == 0 || r.CloseCodes["1014"] == 0 {
		t.Fatalf("%d set changes, close codes %v; want the probe to see web-1 go and 1014s", r.BackendSetChange, r.CloseCodes)
	}
}

// fakeAdmin answers GET /v1/backends with the IDs its current holds.
type fakeAdmin struct {
	srv     *httptest.Server
	current atomic.Pointer[[]string]
}

func newFakeAdmin(t *testing.T, ids ...string) *fakeAdmin {
	f := &fakeAdmin{}
	f.set(ids...)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var out struct {
			Backends []map[string]any `json:"backends"`
		}
		for _, id := range *f.current.Load() {
			out.Backends = append(out.Backends, map[string]any{"id": id, "addr": "127.0.0.1:1", "state": "active", "in_ring": true})
		}
		json.NewEncoder(w).Encode(out)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAdmin) set(ids ...string) { f.current.Store(&ids) }

// A "mesh" that is two unrelated backends behind DNS round robin: a session
// whose backend dies comes back to the other one. With the backend set
// standing still that is a misroute and the verdict fails; with the set
// changing at that moment it is a move.
func TestBenchDetectsMisroutes(t *testing.T) {
	for _, tc := range []struct {
		name          string
		setChanges    bool
		wantMisroutes bool
	}{
		{"set stands still", false, true},
		{"set changes", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startEcho(t, "a"), startEcho(t, "b")
			admin := newFakeAdmin(t, "a", "b")
			cfg := quick([]string{a.Addr(), b.Addr()}, []string{admin.srv.URL})
			cfg.Sessions = 20
			r := runBench(t, cfg, 1500*time.Millisecond, func() {
				if tc.setChanges {
					admin.set("b")
				}
				stopEcho(a)
			})
			if r.SessionsMoved == 0 {
				t.Fatalf("no session moved: %+v", r)
			}
			if got := r.Misroutes > 0; got != tc.wantMisroutes {
				t.Fatalf("%d misroutes, %d moved with the set; want misroutes %v", r.Misroutes, r.MovedSetChanged, tc.wantMisroutes)
			}
			if (r.Verdict == "fail") != tc.wantMisroutes {
				t.Fatalf("verdict %s %v", r.Verdict, r.Reasons)
			}
			if tc.wantMisroutes && !slices.ContainsFunc(r.Reasons, func(s string) bool { return strings.Contains(s, "misroutes") }) {
				t.Fatalf("reasons %v do not name the misroutes", r.Reasons)
			}
			if r.Disconnects["eof"]+r.Disconnects["reset"] == 0 {
				t.Fatalf("disconnects %v; a dead backend ends its connections without a close frame", r.Disconnects)
			}
		})
	}
}

// Sessions bind to the given source addresses in turn, and a refused
// handshake is an error of its own kind.
func TestBenchSourceAddressesAndHandshakeErrors(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		seen[host] = true
		mu.Unlock()
		http.Error(w, "no", http.StatusForbidden)
	}))
	defer srv.Close()
	cfg := quick([]string{srv.Listener.Addr().String()}, nil)
	cfg.Sessions, cfg.Duration = 6, time.Second
	var err error
	if cfg.SourceIPs, err = ParseSourceIPs("127.0.0.2-127.0.0.3"); err != nil {
		t.Fatal(err)
	}
	r := runBench(t, cfg, 0, nil)
	mu.Lock()
	defer mu.Unlock()
	if !seen["127.0.0.2"] || !seen["127.0.0.3"] || len(seen) != 2 {
		t.Fatalf("server saw clients from %v; want 127.0.0.2 and 127.0.0.3", seen)
	}
	if r.Errors["handshake_http_403"] == 0 || r.Verdict != "fail" || r.SessionsAnswered != 0 {
		t.Fatalf("errors %v, verdict %s; want 403s and a failed verdict", r.Errors, r.Verdict)
	}
	if !slices.Equal(r.SourceIPs, []string{"127.0.0.2", "127.0.0.3"}) {
		t.Fatalf("report source IPs %v", r.SourceIPs)
	}
}

// A DNS name is resolved to its addresses, as a client behind DNS round
// robin would: "localhost" here.
func TestBenchTargetByName(t *testing.T) {
	m := startMesh(t, 1, 2)
	_, port, _ := net.SplitHostPort(m.nodes[0].ProxyAddr())
	cfg := quick(nil, m.admins())
	cfg.Target = net.JoinHostPort("localhost", port)
	cfg.Sessions, cfg.Duration = 10, 2*time.Second
	r := runBench(t, cfg, 0, nil)
	if r.SessionsAnswered != 10 || r.Misroutes != 0 {
		t.Fatalf("%d of 10 sessions answered, %d misroutes", r.SessionsAnswered, r.Misroutes)
	}
}

// A mesh that never gets ready fails the run before it starts, saying why.
func TestBenchWaitReadyGivesUp(t *testing.T) {
	admin := newFakeAdmin(t, "a") // its /v1/status says nothing of readiness
	cfg := quick([]string{"127.0.0.1:1"}, []string{admin.srv.URL})
	cfg.WaitReady = 500 * time.Millisecond
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("Run = %v; want a not-ready error", err)
	}
	cfg.Admin = nil
	if _, err := New(cfg); err == nil {
		t.Fatal("New accepted --wait-ready without an admin address")
	}
}

// One failed probe is not a set change; two in a row are.
func TestProbeNeedsTwoFailuresInARow(t *testing.T) {
	admin := newFakeAdmin(t, "gone") // its backends live at 127.0.0.1:1: refused
	w := newWatcher([]string{admin.srv.URL}, time.Second, true, zerolog.Nop())
	defer w.client.CloseIdleConnections()
	for i, want := range [][]string{{"gone"}, {}, {}} {
		got, err := w.fetch(context.Background(), admin.srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("poll %d: set %v; want %v", i+1, got, want)
		}
	}
}

// A backend that dies just before the end: the set is polled a little
// longer, so the moves it caused are not judged before the probe has
// seen it go.
func TestBenchBackendDeathAtTheEnd(t *testing.T) {
	m := startMesh(t, 2, 3)
	cfg := quick(m.proxies(), m.admins())
	cfg.ProbeBackends = true
	cfg.Duration, cfg.PollInterval = 3*time.Second, 300*time.Millisecond
	r := runBench(t, cfg, 2700*time.Millisecond, func() { stopEcho(m.backends[0]) })
	if r.SessionsMoved == 0 {
		t.Skipf("no session moved before the end (a slow machine): %+v", r.Moves)
	}
	if r.Misroutes != 0 {
		t.Fatalf("%d misroutes; the death of web-1 explains every move: %+v", r.Misroutes, r.Moves)
	}
}
