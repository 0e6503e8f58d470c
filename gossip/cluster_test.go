package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/testlog"
)

func newTestLogger(tb testing.TB) zerolog.Logger {
	return zerolog.New(testlog.Writer(tb)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// testConfig is LocalConfig with a logger and a registry of its own.
func testConfig(tb testing.TB, name string, seeds ...string) Config {
	cfg := LocalConfig()
	cfg.Name = name
	cfg.Seeds = seeds
	cfg.Logger = newTestLogger(tb)
	cfg.Registerer = prometheus.NewRegistry()
	return cfg
}

// startCluster builds and starts one Cluster and shuts it down at cleanup.
func startCluster(tb testing.TB, cfg Config, hook func(*Cluster)) *Cluster {
	tb.Helper()
	c, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	if hook != nil {
		hook(c)
	}
	if err := c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Shutdown() })
	return c
}

// newTestCluster starts n Clusters; all but the first seed from the first.
func newTestCluster(tb testing.TB, n int, tweak func(i int, cfg *Config)) []*Cluster {
	tb.Helper()
	cs := make([]*Cluster, n)
	for i := range n {
		var seeds []string
		if i > 0 {
			seeds = []string{cs[0].GossipAddr()}
		}
		cfg := testConfig(tb, fmt.Sprintf("n%02d", i), seeds...)
		if tweak != nil {
			tweak(i, &cfg)
		}
		cs[i] = startCluster(tb, cfg, nil)
	}
	waitMembers(tb, cs, n, 10*time.Second)
	return cs
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func memberNames(c *Cluster) []string {
	var out []string
	for _, m := range c.Members() {
		out = append(out, m.Name)
	}
	return out
}

func waitMembers(tb testing.TB, cs []*Cluster, n int, timeout time.Duration) {
	tb.Helper()
	waitFor(tb, timeout, fmt.Sprintf("%d members everywhere", n), func() bool {
		for _, c := range cs {
			if len(c.Members()) != n {
				return false
			}
		}
		return true
	})
}

// converged reports whether every cluster holds the same records.
func converged(cs []*Cluster) bool {
	want := cs[0].Records()
	for _, c := range cs[1:] {
		if !reflect.DeepEqual(c.Records(), want) {
			return false
		}
	}
	return true
}

func waitConverged(tb testing.TB, cs []*Cluster, timeout time.Duration) {
	tb.Helper()
	waitFor(tb, timeout, "identical catalogs", func() bool { return converged(cs) })
}

func TestClusterConvergence(t *testing.T) {
	cs := newTestCluster(t, 5, nil)
	changes := cs[4].Subscribe()

	// Writes on different members, in different orders, some to the same
	// backend at once.
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			for k := range 6 {
				id := fmt.Sprintf("b%d", (k+i)%6)
				if _, err := c.Upsert(id, fmt.Sprintf("10.0.%d.%d:80", i, k)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	waitConverged(t, cs, 5*time.Second)
	if got := len(cs[0].Records()); got != 6 {
		t.Fatalf("records = %d; want 6", got)
	}

	if _, err := cs[1].SetState("b1", StateDraining); err != nil {
		t.Fatal(err)
	}
	if _, err := cs[2].SetState("b2", StateRemoved); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, cs, 5*time.Second)
	if _, err := cs[3].SetState("b2", StateDraining); !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("SetState of a removed backend = %v; want ErrUnknownBackend", err)
	}
	if _, err := cs[0].SetState("nope", StateDraining); !errors.Is(err, ErrUnknownBackend) {
		t.Fatalf("SetState of an unknown backend = %v; want ErrUnknownBackend", err)
	}
	waitConverged(t, cs, 5*time.Second)
	for _, c := range cs {
		r1, _ := c.catalogGet("b1")
		r2, _ := c.catalogGet("b2")
		if r1.State != StateDraining || r2.State != StateRemoved {
			t.Fatalf("%s: b1 %v, b2 %v; want draining, removed", c.LocalName(), r1.State, r2.State)
		}
	}

	// Upsert of an unchanged active backend writes nothing.
	r, _ := cs[0].catalogGet("b3")
	if got, err := cs[0].Upsert("b3", r.Addr); err != nil || got != r {
		t.Fatalf("idempotent upsert = %v, %v; want %v", got, err, r)
	}
	for _, bad := range [][2]string{{"", "h:1"}, {"a b", "h:1"}, {"x", "h"}, {"x", "h:0"}, {strings.Repeat("x", 256), "h:1"}} {
		if _, err := cs[0].Upsert(bad[0], bad[1]); err == nil {
			t.Errorf("Upsert(%q, %q) accepted", bad[0], bad[1])
		}
	}
	for _, c := range cs {
		if !c.Synced() {
			t.Errorf("%s not synced", c.LocalName())
		}
	}
	select {
	case <-changes:
	default:
		t.Error("no change signalled")
	}
}

func (c *Cluster) catalogGet(id string) (Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.store.Get(KindBackend, id)
	return recordOf(e), ok
}

func TestClusterCrashAndRestart(t *testing.T) {
	cs := newTestCluster(t, 5, nil)
	if _, err := cs[0].Upsert("b1", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, cs, 5*time.Second)

	victim := cs[4]
	addr := victim.GossipAddr()
	if err := victim.Shutdown(); err != nil { // a crash: no Leave
		t.Fatal(err)
	}
	rest := cs[:4]
	waitMembers(t, rest, 4, 15*time.Second)
	cs[0].mu.Lock()
	_, failed := cs[0].failed[victim.LocalName()]
	cs[0].mu.Unlock()
	if !failed {
		t.Fatalf("crashed member not remembered as failed")
	}

	// Written while it was down.
	if _, err := cs[1].Upsert("b2", "10.0.0.2:80"); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, victim.LocalName(), cs[0].GossipAddr())
	cfg.BindAddr = addr
	back := startCluster(t, cfg, nil)
	all := append(append([]*Cluster(nil), rest...), back)
	waitMembers(t, all, 5, 15*time.Second)
	waitConverged(t, all, 5*time.Second)
	if len(back.Records()) != 2 {
		t.Fatalf("restarted member has %v", back.Records())
	}

	// Crash again and come back on a new port: DeadNodeReclaimTime lets the
	// name move once the old entry is dead.
	if err := back.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, rest, 4, 15*time.Second)
	cfg = testConfig(t, victim.LocalName(), cs[0].GossipAddr())
	moved := startCluster(t, cfg, nil)
	if moved.GossipAddr() == addr {
		t.Fatalf("restart got the same address %s", addr)
	}
	all[4] = moved
	waitMembers(t, all, 5, 15*time.Second)
	waitConverged(t, all, 5*time.Second)
	for _, c := range rest {
		for _, m := range c.Members() {
			if m.Name == victim.LocalName() && m.Addr != moved.GossipAddr() {
				t.Fatalf("%s sees %s at %s; want %s", c.LocalName(), m.Name, m.Addr, moved.GossipAddr())
			}
		}
	}
}

func TestClusterLeave(t *testing.T) {
	cs := newTestCluster(t, 4, nil)
	leaver := cs[3]
	if err := leaver.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := leaver.Leave(time.Second); err != nil {
		t.Fatalf("second Leave = %v; want nil", err)
	}
	if err := leaver.SetMeta(Meta{RingFP: 1}); err == nil {
		t.Error("SetMeta after Leave succeeded")
	}
	rest := cs[:3]
	waitMembers(t, rest, 3, 10*time.Second)
	for _, c := range rest {
		c.mu.Lock()
		_, failed := c.failed[leaver.LocalName()]
		c.mu.Unlock()
		if failed {
			t.Fatalf("%s remembers the member that left as failed", c.LocalName())
		}
	}
	// Several rejoin rounds later it is still gone.
	time.Sleep(3 * LocalConfig().RejoinInterval)
	for _, c := range rest {
		if n := len(c.Members()); n != 3 {
			t.Fatalf("%s: members %v after rejoin rounds; want 3", c.LocalName(), memberNames(c))
		}
	}
}

func TestClusterEncryption(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	const kindBig Kind = 201
	cs := newTestCluster(t, 3, func(_ int, cfg *Config) {
		cfg.SecretKey = key
		cfg.Kinds = []KindSpec{{Kind: kindBig, Name: "big", Secret: true}}
	})

	// A record and an entry with every field at its maximum cross the
	// encrypted mesh; the entry's kind is secret, allowed only here.
	maxID, maxAddr := strings.Repeat("i", 255), strings.Repeat("h", maxAddrLen-6)+":65535"
	if _, err := cs[0].Upsert(maxID, maxAddr); err != nil {
		t.Fatal(err)
	}
	big := maxEntry()
	if _, err := cs[1].Put(kindBig, big.Key, big.Value); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "max-size record and entry everywhere", func() bool {
		for _, c := range cs {
			if _, ok := c.catalogGet(maxID); !ok {
				return false
			}
			if e, ok := c.Get(kindBig, big.Key); !ok || !bytes.Equal(e.Value, big.Value) {
				return false
			}
		}
		return true
	})
	plain, err := New(Config{Name: "plain", Kinds: []KindSpec{{Kind: kindBig, Name: "big", Secret: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Put(kindBig, "k", []byte("v")); err == nil {
		t.Error("a secret entry was written without a gossip key")
	}

	other := testConfig(t, "intruder-key", cs[0].GossipAddr())
	other.SecretKey = []byte("fedcba9876543210")
	none := testConfig(t, "intruder-plain", cs[0].GossipAddr())
	outsiders := []*Cluster{startCluster(t, other, nil), startCluster(t, none, nil)}
	time.Sleep(2 * time.Second)
	for _, o := range outsiders {
		if o.Synced() || len(o.Members()) != 1 {
			t.Errorf("%s got in: synced %v, members %v", o.LocalName(), o.Synced(), memberNames(o))
		}
	}
	for _, c := range cs {
		if n := len(c.Members()); n != 3 {
			t.Errorf("%s: members %v; want 3", c.LocalName(), memberNames(c))
		}
	}
}

func TestClusterRejectsGarbage(t *testing.T) {
	cs := newTestCluster(t, 3, nil)
	target := cs[0]
	var to *memberlist.Node
	for _, n := range cs[1].ml.Load().Members() {
		if n.Name == target.LocalName() {
			to = &memberlist.Node{Name: n.Name, Addr: n.Addr, Port: n.Port}
		}
	}
	valid := encodeEntryMsg(recordEntry(Record{ID: "x", Addr: "h:1", State: StateActive, Version: 1, Origin: "n"}))
	garbage := map[string][]byte{
		reasonTruncated: valid[:len(valid)-2],
		reasonVersion:   append([]byte{9}, valid[1:]...),
		reasonTrailing:  append(append([]byte(nil), valid...), 1, 2, 3),
		reasonType:      encodeAckMsg(1),
		reasonOversized: append([]byte{1, 1}, make([]byte, maxMsgSize)...),
	}
	for _, b := range garbage {
		if err := cs[1].ml.Load().SendBestEffort(to, b); err != nil && !strings.Contains(err.Error(), "too large") {
			t.Fatal(err)
		}
	}
	// Raw bytes straight at the gossip port, UDP and TCP: memberlist's own
	// decoder drops them; nothing may crash.
	for _, network := range []string{"udp", "tcp"} {
		conn, err := net.Dial(network, target.GossipAddr())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write([]byte("\x08\x01\x01garbage that is not memberlist"))
		_ = conn.Close()
	}
	rejected := func(reason string) float64 {
		return counterValue(target.m.rejected.WithLabelValues(reason))
	}
	waitFor(t, 5*time.Second, "rejections counted", func() bool {
		return rejected(reasonTruncated) >= 1 && rejected(reasonVersion) >= 1 &&
			rejected(reasonTrailing) >= 1 && rejected(reasonType) >= 1
	})
	if _, err := cs[2].Upsert("b1", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, cs, 5*time.Second)
	if len(target.Records()) != 1 {
		t.Fatalf("records = %v", target.Records())
	}
}

// TestAntiEntropyRepair makes one member hold a record no broadcast carried:
// the digest in ping acks must spread it within a few probe intervals, long
// before the (here disabled) periodic push/pull.
func TestAntiEntropyRepair(t *testing.T) {
	cs := newTestCluster(t, 5, func(_ int, cfg *Config) { cfg.PushPullInterval = time.Hour })
	r := Record{ID: "hidden", Addr: "10.9.9.9:80", State: StateActive, Version: uint64(time.Now().UnixMilli()) << 16, Origin: cs[2].LocalName()}
	if !cs[2].mergeForTest(recordEntry(r)) {
		t.Fatal("hook did not merge")
	}
	start := time.Now()
	probe := LocalConfig().ProbeInterval
	waitConverged(t, cs, 10*probe)
	t.Logf("repaired everywhere in %v (probe interval %v)", time.Since(start), probe)
	var syncs float64
	for _, c := range cs {
		syncs += counterValue(c.m.syncs.WithLabelValues("digest"))
	}
	if syncs == 0 {
		t.Fatal("no digest repair ran")
	}
}

// partition blocks traffic between two sets of gossip addresses.
type partition struct {
	mu      sync.Mutex
	side    map[string]int // addr → group
	enabled bool
}

func (p *partition) blocked(from, to string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, okA := p.side[from]
	b, okB := p.side[to]
	return p.enabled && okA && okB && a != b
}

func (p *partition) set(on bool) { p.mu.Lock(); p.enabled = on; p.mu.Unlock() }

// filterTransport drops packets and refuses connections across a partition.
type filterTransport struct {
	memberlist.NodeAwareTransport
	self func() string
	p    *partition
}

var errPartitioned = errors.New("partitioned")

func (f *filterTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if f.p.blocked(f.self(), addr) {
		return time.Now(), nil
	}
	return f.NodeAwareTransport.WriteTo(b, addr)
}

func (f *filterTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if f.p.blocked(f.self(), a.Addr) {
		return time.Now(), nil
	}
	return f.NodeAwareTransport.WriteToAddress(b, a)
}

func (f *filterTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	if f.p.blocked(f.self(), addr) {
		return nil, errPartitioned
	}
	return f.NodeAwareTransport.DialTimeout(addr, d)
}

func (f *filterTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	if f.p.blocked(f.self(), a.Addr) {
		return nil, errPartitioned
	}
	return f.NodeAwareTransport.DialAddressTimeout(a, d)
}

// TestPartitionHeal splits six members in two for longer than the
// suspicion window, writes on both sides, heals the network and expects the
// rejoin loop to make one mesh with one catalog again.
func TestPartitionHeal(t *testing.T) {
	p := &partition{side: make(map[string]int)}
	cs := make([]*Cluster, 6)
	for i := range cs {
		var seeds []string
		if i > 0 {
			seeds = []string{cs[0].GossipAddr()}
		}
		cfg := testConfig(t, fmt.Sprintf("p%d", i), seeds...)
		cfg.PushPullInterval = time.Hour // only the rejoin loop may heal
		var self atomic.Value
		c := startCluster(t, cfg, func(c *Cluster) {
			c.wrapTransportForTest = func(nt memberlist.NodeAwareTransport) memberlist.NodeAwareTransport {
				return &filterTransport{NodeAwareTransport: nt, p: p, self: func() string { s, _ := self.Load().(string); return s }}
			}
			// memberlist keeps gossiping to dead nodes for 30 s, and a node
			// that hears it is dead refutes it: that heals short partitions
			// by itself. Turn it off so that this test needs as long a
			// partition as one that outlasts those 30 s.
			c.tweakMemberlistForTest = func(mc *memberlist.Config) { mc.GossipToTheDeadTime = time.Millisecond }
		})
		self.Store(c.GossipAddr())
		p.mu.Lock()
		p.side[c.GossipAddr()] = i % 2
		p.mu.Unlock()
		cs[i] = c
	}
	// Forming the mesh is not what this test is about: under -race on two
	// busy cores six members have taken over 10 s (CI).
	waitMembers(t, cs, 6, 30*time.Second)

	p.set(true)
	sides := [2][]*Cluster{{cs[0], cs[2], cs[4]}, {cs[1], cs[3], cs[5]}}
	waitMembers(t, sides[0], 3, 20*time.Second)
	waitMembers(t, sides[1], 3, 20*time.Second)
	if _, err := sides[0][1].Upsert("left", "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	if _, err := sides[1][1].Upsert("right", "10.0.0.2:80"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, sides[0], 5*time.Second)
	waitConverged(t, sides[1], 5*time.Second)

	p.set(false)
	healed := time.Now()
	waitMembers(t, cs, 6, 20*time.Second)
	waitConverged(t, cs, 10*time.Second)
	t.Logf("one mesh again %v after the partition healed", time.Since(healed))
	var rejoins float64
	for _, c := range cs {
		rejoins += counterValue(c.m.syncs.WithLabelValues("rejoin")) - counterValue(c.m.syncErrors.WithLabelValues("rejoin"))
	}
	if rejoins == 0 {
		t.Fatal("healed without a successful rejoin")
	}
	if n := len(cs[0].Records()); n != 2 {
		t.Fatalf("records = %v; want 2", cs[0].Records())
	}
}

func TestClusterMeta(t *testing.T) {
	cs := newTestCluster(t, 3, func(i int, cfg *Config) {
		cfg.Meta = Meta{ProxyAddr: fmt.Sprintf("127.0.0.1:%d", 8000+i), ConfigFP: 42}
	})
	m := cs[1].Members()[1].Meta
	if m.Role != RoleBalancer || m.State != NodeActive || m.ProxyAddr != "127.0.0.1:8001" || m.ConfigFP != 42 {
		t.Fatalf("meta seen = %+v", m)
	}
	drain := Meta{State: NodeDraining, ProxyAddr: "127.0.0.1:8001", ConfigFP: 42, RingFP: 7}
	if err := cs[1].SetMeta(drain); err != nil {
		t.Fatal(err)
	}
	if err := cs[1].SetMeta(drain); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "meta update everywhere", func() bool {
		for _, c := range cs {
			got := c.Members()[1]
			if got.MetaErr != nil || got.Meta.State != NodeDraining || got.Meta.RingFP != 7 {
				return false
			}
		}
		return true
	})
	if err := cs[0].SetMeta(Meta{ProxyAddr: strings.Repeat("x", 65)}); err == nil {
		t.Fatal("SetMeta accepted a 65-byte address")
	}
}

func TestLifecycle(t *testing.T) {
	t.Run("no seeds is synced", func(t *testing.T) {
		c := startCluster(t, testConfig(t, "solo"), nil)
		if !c.Synced() {
			t.Fatal("a node without seeds is not synced")
		}
		if ms := c.Members(); len(ms) != 1 || ms[0].Name != "solo" || ms[0].Addr != c.GossipAddr() {
			t.Fatalf("members = %+v", ms)
		}
	})
	t.Run("seed pointing at itself is synced", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		cfg := testConfig(t, "self", addr)
		cfg.BindAddr = addr
		c := startCluster(t, cfg, nil)
		waitFor(t, 2*time.Second, "synced", c.Synced)
	})
	t.Run("dns seed means every address", func(t *testing.T) {
		c, err := New(testConfig(t, "dns", "localhost:7999", "127.0.0.1:7998"))
		if err != nil {
			t.Fatal(err)
		}
		addrs, selfOnly, err := c.resolveSeeds(context.Background())
		if err != nil || selfOnly {
			t.Fatalf("resolveSeeds = %v, %v, %v", addrs, selfOnly, err)
		}
		if !slices.Contains(addrs, "127.0.0.1:7999") || !slices.Contains(addrs, "127.0.0.1:7998") {
			t.Fatalf("resolved %v; want 127.0.0.1:7999 and 127.0.0.1:7998", addrs)
		}
	})
	t.Run("bind and advertise by name", func(t *testing.T) {
		cfg := testConfig(t, "named")
		cfg.BindAddr = "localhost:0"
		cfg.AdvertiseAddr = "localhost:0"
		c := startCluster(t, cfg, nil)
		if a := c.GossipAddr(); !strings.HasPrefix(a, "127.0.0.1:") || strings.HasSuffix(a, ":0") {
			t.Fatalf("GossipAddr = %q; want 127.0.0.1 and the bound port", a)
		}
	})
	t.Run("unreachable seed is not synced", func(t *testing.T) {
		c := startCluster(t, testConfig(t, "alone", "127.0.0.1:1"), nil)
		time.Sleep(300 * time.Millisecond)
		if c.Synced() {
			t.Fatal("synced without any peer")
		}
	})
	t.Run("shutdown order never panics", func(t *testing.T) {
		c, err := New(testConfig(t, "order"))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Leave(time.Second); err == nil {
			t.Error("Leave before Start succeeded")
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); err == nil {
			t.Error("second Start succeeded")
		}
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
		if err := c.Shutdown(); err != nil {
			t.Fatalf("second Shutdown = %v", err)
		}
		if err := c.Leave(time.Second); err == nil {
			t.Error("Leave after Shutdown succeeded")
		}
		if err := c.SetMeta(Meta{RingFP: 3}); err == nil {
			t.Error("SetMeta after Shutdown succeeded")
		}
		if err := c.Start(context.Background()); err == nil {
			t.Error("Start after Shutdown succeeded")
		}
		unstarted, _ := New(testConfig(t, "never"))
		if err := unstarted.Shutdown(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("port in use names the address", func(t *testing.T) {
		a := startCluster(t, testConfig(t, "a"), nil)
		cfg := testConfig(t, "b")
		cfg.BindAddr = a.GossipAddr()
		b, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), a.GossipAddr()) {
			t.Fatalf("Start on a used port = %v; want an error naming %s", err, a.GossipAddr())
		}
		_ = b.Shutdown()
	})
	t.Run("config validation", func(t *testing.T) {
		for name, mod := range map[string]func(*Config){
			"no name":        func(c *Config) { c.Name = "" },
			"bad bind":       func(c *Config) { c.BindAddr = "localhost" },
			"bad bind port":  func(c *Config) { c.BindAddr = "localhost:x" },
			"bad seed":       func(c *Config) { c.Seeds = []string{"nope"} },
			"bad key":        func(c *Config) { c.SecretKey = []byte("short") },
			"long meta":      func(c *Config) { c.Meta.AdminAddr = strings.Repeat("a", 100) },
			"probe timeout":  func(c *Config) { c.ProbeTimeout = time.Hour },
			"negative ttl":   func(c *Config) { c.TombstoneTTL = -time.Second },
			"negative nodes": func(c *Config) { c.GossipNodes = -1 },
		} {
			cfg := testConfig(t, "v")
			mod(&cfg)
			if _, err := New(cfg); err == nil {
				t.Errorf("%s: New succeeded", name)
			}
		}
		reg := prometheus.NewRegistry()
		cfg := testConfig(t, "v")
		cfg.Registerer = reg
		if _, err := New(cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := New(cfg); err == nil {
			t.Error("registering twice on one registry succeeded")
		}
	})
}

func TestLogWriter(t *testing.T) {
	var buf strings.Builder
	w := &logWriter{
		log:   zerolog.New(&buf),
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"level"}),
	}
	_, _ = io.WriteString(w, "2026/01/02 15:04:05 [DEBUG] memberlist: Stream connection from=1.2.3.4\n"+
		"2026/01/02 15:04:05 [WARN] memberlist: Refuting a suspect message\n")
	_, _ = io.WriteString(w, "[ERR] memberlist: failed to receive\n")
	_, _ = io.WriteString(w, "[INFO] memberlist: hello\n")
	_, _ = io.WriteString(w, "[INFO] memberlist: Marking n2 as failed, suspect timeout reached (2 peer confirmations)\n"+
		"[WARN] memberlist: Was able to connect to n3 over TCP but UDP probes failed, network may be misconfigured\n"+
		"[WARN] memberlist: Got ping for unexpected node 'n9' from=10.0.0.9:7946\n")
	out := buf.String()
	for _, want := range []string{
		`{"level":"info","peer":"n2","confirmations":"2","line":"Marking n2 as failed, suspect timeout reached (2 peer confirmations)","message":"peer failed: suspicion not refuted in time"}`,
		`{"level":"warn","peer":"n3","line":"Was able to connect to n3 over TCP but UDP probes failed, network may be misconfigured","message":"peer answers over tcp only: udp to its gossip port is blocked or lost"}`,
		`{"level":"warn","name":"n9","from":"10.0.0.9:7946","line":"Got ping for unexpected node 'n9' from=10.0.0.9:7946","message":"probe for another node name reached this address: a peer has a stale address"}`,
		`{"level":"debug","line":"Stream connection from=1.2.3.4","message":"memberlist"}`,
		`{"level":"warn","line":"Refuting a suspect message","message":"memberlist"}`,
		`{"level":"error","line":"failed to receive","message":"memberlist"}`,
		`{"level":"info","line":"hello","message":"memberlist"}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log output lacks %s:\n%s", want, out)
		}
	}
	for level, want := range map[string]float64{"debug": 1, "warn": 3, "error": 1, "info": 2} {
		if got := counterValue(w.lines.WithLabelValues(level)); got != want {
			t.Errorf("lines{level=%s} = %v; want %v", level, got, want)
		}
	}
}

// counterValue reads a counter without prometheus/testutil, whose
// dependencies are not in go.sum.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// lockedBuffer is an io.Writer for a logger written from memberlist's
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// TestGarbagePacketsAreQuiet sends garbage UDP packets to a real cluster:
// they are counted by reason, and the log holds a few lines, not one per
// packet (memberlist alone wrote 9,623 lines for 10,000).
func TestGarbagePacketsAreQuiet(t *testing.T) {
	var logs lockedBuffer
	cfg := testConfig(t, "quiet")
	cfg.Logger = zerolog.New(&logs).Level(zerolog.WarnLevel)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	c := startCluster(t, cfg, nil)
	conn, err := net.Dial("udp", c.GossipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const packets = 2000
	for i := range packets {
		// Message type 99 does not exist; a few bytes of payload.
		_, _ = conn.Write([]byte{99, byte(i), byte(i >> 8), 0})
	}
	waitRejected := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for _, mf := range mfs {
			if mf.GetName() == "meshlb_gossip_rejected_total" {
				for _, m := range mf.GetMetric() {
					n += m.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	// Wait until the packets stop coming (UDP on loopback may drop some):
	// the summary stops with the logger, and a rejection after it is
	// logged on its own line.
	deadline := time.Now().Add(10 * time.Second)
	for last := -1.0; time.Now().Before(deadline); {
		n := waitRejected()
		if n >= packets/2 && n == last {
			break
		}
		last = n
		time.Sleep(300 * time.Millisecond)
	}
	if n := waitRejected(); n < packets/2 {
		t.Fatalf("rejected = %v; want most of %d", n, packets)
	}
	c.logw.stop() // the summary now rather than in ten seconds
	n := strings.Count(logs.String(), "gossip packets rejected")
	if n < 1 || n > 3 {
		t.Fatalf("%d summary lines for %d packets; want 1 to 3:\n%s", n, packets, logs.String())
	}
	if strings.Count(logs.String(), "not supported") > n {
		t.Fatalf("memberlist's own lines got through:\n%s", logs.String())
	}
}

// FuzzLogWriter feeds memberlist log output, whose text carries what
// peers and outsiders sent (labels, node names), to the adapter: no
// panic, and a refused packet never writes more than its summary's line.
func FuzzLogWriter(f *testing.F) {
	for _, s := range []string{
		"2026/01/02 15:04:05 [ERR] memberlist: Decrypt packet failed: x from=1.2.3.4:5\n",
		"[WARN] memberlist: Refuting a suspect message\n",
		"[ERR] memberlist: discarding packet with unacceptable label \"\\x00[ERR]\": from=1.2.3.4:5\n",
		"[[]]\n[\n]\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var buf strings.Builder
		w := &logWriter{
			log:      zerolog.New(&buf),
			lines:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"level"}),
			rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "y"}, []string{"reason"}),
		}
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(p))
		}
		w.stop()
		if got, in := strings.Count(buf.String(), "\n"), len(bytes.Split(p, []byte("\n"))); got > in+1 {
			t.Fatalf("%d log lines out of %d in", got, in)
		}
	})
}
