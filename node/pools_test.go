package node

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/ring"
	"github.com/meshlb/meshlb/router"
)

// TestTablePools: each pool gets its own ring of its own backends; the
// default pool alone keeps the fingerprint it had before pools; a change
// to one pool leaves the other pools' rings as they were.
func TestTablePools(t *testing.T) {
	cfg := ring.Config{Partitions: 7919, ReplicationFactor: 100}
	def := []gossip.Record{
		{ID: "web-1", Addr: "10.0.0.1:80", State: gossip.StateActive, Pool: gossip.DefaultPool},
		{ID: "web-2", Addr: "10.0.0.2:80", State: gossip.StateActive},
	}
	only, _, err := newTable(cfg, def, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ring.Build(cfg, []string{"web-1", "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	if want := tableFingerprint(r.Fingerprint(), r.Members(), []string{"10.0.0.1:80", "10.0.0.2:80"}); only.Fingerprint != want || only.PoolTable.Fingerprint != want {
		t.Fatalf("default pool alone: fingerprint %x; want %x, as before pools", only.Fingerprint, want)
	}

	recs := append(def,
		gossip.Record{ID: "rides-1", Addr: "10.0.1.1:80", State: gossip.StateActive, Pool: "rides"},
		gossip.Record{ID: "rides-2", Addr: "10.0.1.2:80", State: gossip.StateActive, Pool: "rides"},
		gossip.Record{ID: "chat-1", Addr: "10.0.2.1:80", State: gossip.StateDraining, Pool: "chat"},
	)
	tab, _, err := newTable(cfg, recs, nil, only)
	if err != nil {
		t.Fatal(err)
	}
	if tab.PoolTable != only.PoolTable {
		t.Error("the default pool's ring was rebuilt though its backends did not change")
	}
	var names []string
	for _, p := range tab.Pools() {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "default,rides" || tab.Backends() != 4 {
		t.Fatalf("pools %v, %d backends; want default,rides (chat has none active) and 4", names, tab.Backends())
	}
	if tab.Fingerprint == only.Fingerprint {
		t.Error("adding a pool left the table's fingerprint as it was")
	}
	if tab.Pool("chat") != nil || tab.Pool("nope") != nil || tab.Pool("") != tab.PoolTable {
		t.Error("Pool: an empty or unknown pool has a table, or \"\" is not the default")
	}
	for i := range 1000 {
		key := []byte("k" + string(rune('a'+i%26)) + strings.Repeat("x", i%7))
		if rt, _ := tab.Pool("rides").Locate(key); !strings.HasPrefix(rt.Backend, "rides-") {
			t.Fatalf("a key of pool rides went to %s", rt.Backend)
		}
		if rt, _ := tab.Locate(key); !strings.HasPrefix(rt.Backend, "web-") {
			t.Fatalf("a key of the default pool went to %s", rt.Backend)
		}
	}
	if !tab.sameInputs(recs, nil) || tab.sameInputs(def, nil) {
		t.Error("sameInputs does not see a pool added or gone")
	}
	moved := append([]gossip.Record(nil), recs...)
	moved[2].Pool = gossip.DefaultPool // rides-1 moves to the default pool
	if tab.sameInputs(moved, nil) {
		t.Error("sameInputs does not see a backend change pools")
	}
	again, _, err := newTable(cfg, recs, nil, nil)
	if err != nil || again.Fingerprint != tab.Fingerprint {
		t.Fatalf("the same records built afresh: %x, %v; want %x", again.Fingerprint, err, tab.Fingerprint)
	}
}

// TestPoolsThroughTheAdminAPI: a backend added with a pool is on that
// pool's ring only; /v1/route answers per pool or per route; the picker
// and the affinity lookup never cross pools; the capacity check counts
// the pool's own backends.
func TestPoolsThroughTheAdminAPI(t *testing.T) {
	cfg := testConfig(t, "pools")
	cfg.Router.Routes = []router.Route{{Path: "/ws", Pool: "rides"}}
	n := startNode(t, cfg)
	for _, b := range []string{
		`{"id": "web-1", "addr": "127.0.0.1:9001"}`,
		`{"id": "rides-1", "addr": "127.0.0.1:9101", "pool": "rides"}`,
		`{"id": "rides-2", "addr": "127.0.0.1:9102", "pool": "rides"}`,
	} {
		if code, body := call(t, "POST", adminURL(n, "/v1/backends"), b); code != 200 {
			t.Fatalf("add %s: %d %s", b, code, body)
		}
	}
	for _, bad := range []string{`{"addr": "127.0.0.1:9", "pool": "Rides"}`, `{"addr": "127.0.0.1:9", "pool": "a/b"}`} {
		if code, body := call(t, "POST", adminURL(n, "/v1/backends"), bad); code != 400 || !strings.Contains(string(body), "pool") {
			t.Errorf("add %s: %d %s; want 400 naming the pool", bad, code, body)
		}
	}
	waitFor(t, 5*time.Second, "two pools on the rings", func() (bool, string) {
		s := n.Status()
		return s.Ring.Backends == 3 && len(s.Ring.Pools) == 2, "waiting"
	})

	route := func(q string) RouteAnswer {
		t.Helper()
		code, body := call(t, "GET", adminURL(n, "/v1/route?key=alice"+q), "")
		var a RouteAnswer
		if err := json.Unmarshal(body, &a); err != nil || code != 200 {
			t.Fatalf("route%s: %d %s", q, code, body)
		}
		return a
	}
	if a := route(""); a.Pool != "default" || a.Backend != "web-1" {
		t.Errorf("route = %+v; want web-1 of the default pool", a)
	}
	if a := route("&pool=rides"); a.Pool != "rides" || !strings.HasPrefix(a.Backend, "rides-") {
		t.Errorf("route pool=rides = %+v", a)
	}
	if a := route("&path=/ws/x"); a.Pool != "rides" || !strings.HasPrefix(a.Backend, "rides-") {
		t.Errorf("route path=/ws/x = %+v; want the routes to pick rides", a)
	}
	if code, body := call(t, "GET", adminURL(n, "/v1/route?key=a&pool=chat"), ""); code != 503 || !strings.Contains(string(body), "no backends in pool chat") {
		t.Errorf("route in an empty pool: %d %s", code, body)
	}
	if code, _ := call(t, "GET", adminURL(n, "/v1/route?key=a&pool=rides&path=/"), ""); code != 400 {
		t.Errorf("pool and path together: %d; want 400", code)
	}

	for i := range 200 {
		key := []byte("key-" + strings.Repeat("z", i%5) + string(rune('a'+i%26)))
		cands, err := (picker{n}).Pick("rides", key, 3)
		if err != nil || len(cands) != 2 {
			t.Fatalf("pick in rides: %v %v", cands, err)
		}
		for _, c := range cands {
			if !strings.HasPrefix(c.ID, "rides-") {
				t.Fatalf("a candidate of pool rides is %s", c.ID)
			}
		}
		if cands, _ := (picker{n}).Pick("default", key, 3); len(cands) != 1 || cands[0].ID != "web-1" {
			t.Fatalf("pick in default: %v", cands)
		}
	}
	if _, err := (picker{n}).Pick("chat", []byte("k"), 3); err != router.ErrNoBackends {
		t.Errorf("pick in a pool without backends: %v", err)
	}
	if _, ok := n.affinityLookup("default", "rides-1"); ok {
		t.Error("an affinity cookie naming a backend of rides pins a request of the default pool")
	}
	if b, ok := n.affinityLookup("rides", "rides-1"); !ok || b.Addr != "127.0.0.1:9101" {
		t.Errorf("affinity lookup in its own pool: %+v %v", b, ok)
	}

	code, body := call(t, "GET", adminURL(n, "/v1/backends"), "")
	var list struct{ Backends []BackendStatus }
	if err := json.Unmarshal(body, &list); err != nil || code != 200 {
		t.Fatalf("backends: %d %s", code, body)
	}
	for _, b := range list.Backends {
		want := "default"
		if strings.HasPrefix(b.ID, "rides-") {
			want = "rides"
		}
		if b.Pool != want || !b.InRing {
			t.Errorf("backend %+v; want pool %s, in its ring", b, want)
		}
	}
}

// TestPoolCapacityIsPerPool: the ring's capacity (partitions ≥ backends)
// is checked within the backend's pool: a small ring full in one pool
// still takes backends in another.
func TestPoolCapacityIsPerPool(t *testing.T) {
	cfg := testConfig(t, "small-pools")
	cfg.Ring.Partitions = 3
	cfg.Ring.ReplicationFactor = 4
	cfg.Ring.Load = 1.25
	n := startNode(t, cfg)
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} {
		if code, b := call(t, "POST", adminURL(n, "/v1/backends"), `{"addr": "`+addr+`"}`); code != 200 {
			t.Fatalf("add: %d %s", code, b)
		}
	}
	if code, b := call(t, "POST", adminURL(n, "/v1/backends"), `{"addr": "127.0.0.1:4"}`); code != 409 || !strings.Contains(string(b), "pool default") {
		t.Fatalf("fourth backend of the default pool: %d %s; want 409", code, b)
	}
	if code, b := call(t, "POST", adminURL(n, "/v1/backends"), `{"addr": "127.0.0.1:4", "pool": "other"}`); code != 200 {
		t.Fatalf("first backend of another pool: %d %s", code, b)
	}
}

// TestConfigFingerprintCoversRoutesAndPoolKeys: routes and pools' key
// sources are mesh-wide (they decide where a request goes), in any order
// the config lists them; without them the fingerprint is what it was.
func TestConfigFingerprintCoversRoutesAndPoolKeys(t *testing.T) {
	fpOf := func(c Config) uint64 {
		t.Helper()
		v, err := configFingerprint(c)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	base := testConfig(t, "fp")
	plain := fpOf(base)
	empty := base
	empty.Router.Routes, empty.Router.PoolKeySources = []router.Route{}, map[string]string{}
	if fpOf(empty) != plain {
		t.Error("empty routes and pool keys changed the fingerprint")
	}
	a, b := base, base
	a.Router.Routes = []router.Route{{Path: "/ws", Pool: "rides"}, {Host: "Chat.example.com", Pool: "chat"}}
	b.Router.Routes = []router.Route{{Host: "chat.example.com", Pool: "chat"}, {Path: "/ws", Pool: "rides"}}
	if fpOf(a) == plain || fpOf(a) != fpOf(b) {
		t.Error("routes: not covered, or their order or case counts")
	}
	c := a
	c.Router.Routes = []router.Route{{Path: "/ws", Pool: "chat"}, {Host: "chat.example.com", Pool: "chat"}}
	if fpOf(c) == fpOf(a) {
		t.Error("a route to another pool left the fingerprint as it was")
	}
	k1, k2 := base, base
	k1.Router.PoolKeySources = map[string]string{"rides": "query:ride_id,ip"}
	k2.Router.PoolKeySources = map[string]string{"rides": "query:ride_id, ip"}
	if fpOf(k1) == plain || fpOf(k1) != fpOf(k2) {
		t.Error("pool key sources: not covered, or their spelling counts")
	}
	bad := base
	bad.Router.PoolKeySources = map[string]string{"rides": "query:"}
	if _, err := configFingerprint(bad); err == nil {
		t.Error("bad key sources of a pool accepted")
	}
}

// TestApplyRoutesRollsThroughTheMesh: a node that takes new routes while
// its peers keep the old ones is not ready (they would send some requests
// to another pool); once most nodes have them, the last one with the old
// routes is the one refused; once all have them, all are ready. A refused
// route changes nothing.
func TestApplyRoutesRollsThroughTheMesh(t *testing.T) {
	a := startNode(t, testConfig(t, "a"))
	b := startNode(t, testConfig(t, "b", a.GossipAddr()))
	c := startNode(t, testConfig(t, "c", a.GossipAddr()))
	nodes := []*Node{a, b, c}
	if code, body := call(t, "POST", adminURL(a, "/v1/backends"), `{"addr": "127.0.0.1:9001"}`); code != 200 {
		t.Fatalf("add: %d %s", code, body)
	}
	ready := func(want ...bool) func() (bool, string) {
		return func() (bool, string) {
			var got []bool
			for _, n := range nodes {
				ok, _ := n.Ready()
				got = append(got, ok)
			}
			return slices.Equal(got, want), fmt.Sprint("ready ", got)
		}
	}
	waitFor(t, 10*time.Second, "all ready", ready(true, true, true))
	routes := []router.Route{{Path: "/ws", Pool: "rides"}}
	if err := c.ApplyRoutes([]router.Route{{Path: "/ws", Pool: "Bad"}}, nil); err == nil {
		t.Fatal("a bad pool accepted")
	}
	if err := c.ApplyRoutes(routes, nil); err != nil {
		t.Fatal(err)
	}
	if c.router.Pool("h", "/ws") != "rides" {
		t.Fatal("routes not in the router")
	}
	waitFor(t, 10*time.Second, "c refuses alone", ready(true, true, false))
	if err := b.ApplyRoutes(routes, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a refuses alone", ready(false, true, true))
	if err := a.ApplyRoutes(routes, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "all ready again", ready(true, true, true))
	if a.Status().ConfigFingerprint != c.Status().ConfigFingerprint {
		t.Error("fingerprints differ after every node took the routes")
	}
}
