package node

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestAdminAPI(t *testing.T) {
	n := startNode(t, testConfig(t, "solo"))
	waitFor(t, 5*time.Second, "first ring", func() (bool, string) { return n.Table() != nil, "no table" })

	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		want                     string // substring of the body
	}{
		{"healthz", "GET", "/healthz", "", 200, `"ok"`},
		{"not ready without backends", "GET", "/readyz", "", 503, "no backends"},
		{"route on an empty ring", "GET", "/v1/route?key=x", "", 503, `"error": "no backends"`},
		{"route without key", "GET", "/v1/route", "", 400, "missing query parameter key"},
		{"unknown path", "GET", "/v2/nothing", "", 404, `"error"`},
		{"wrong method", "PUT", "/v1/backends", "", 405, "GET, POST"},
		{"wrong method on drain", "GET", "/v1/backends/x/drain", "", 405, "POST"},
		{"garbage body", "POST", "/v1/backends", "{not json", 400, `"error"`},
		{"unknown field", "POST", "/v1/backends", `{"addr": "127.0.0.1:1", "colour": 3}`, 400, "colour"},
		{"weight zero", "POST", "/v1/backends", `{"addr": "127.0.0.1:1", "weight": 0}`, 400, "weight"},
		{"weight too big", "POST", "/v1/backends", `{"addr": "127.0.0.1:1", "weight": 101}`, 400, "want 1 to 100"},
		{"two objects", "POST", "/v1/backends", `{"addr": "127.0.0.1:1"}{}`, 400, "exactly one"},
		{"no addr", "POST", "/v1/backends", `{"id": "x"}`, 400, "addr"},
		{"bad addr", "POST", "/v1/backends", `{"addr": "localhost"}`, 400, "addr"},
		{"port zero", "POST", "/v1/backends", `{"addr": "127.0.0.1:0"}`, 400, "port"},
		{"bad id", "POST", "/v1/backends", `{"id": "a b", "addr": "127.0.0.1:1"}`, 400, "id"},
		{"huge body", "POST", "/v1/backends", `{"id": "` + strings.Repeat("x", 70<<10) + `"}`, 400, `"error"`},
		{"drain unknown", "POST", "/v1/backends/nope/drain", "", 404, "no such backend"},
		{"remove unknown", "DELETE", "/v1/backends/nope", "", 404, "no such backend"},
		{"add", "POST", "/v1/backends", `{"addr": "127.0.0.1:9001"}`, 200, `"id": "127.0.0.1:9001"`},
		{"add with id", "POST", "/v1/backends", `{"id": "web-2", "addr": "127.0.0.1:9002"}`, 200, `"state": "active"`},
		{"add weighted", "POST", "/v1/backends", `{"id": "web-2", "addr": "127.0.0.1:9002", "weight": 3}`, 200, `"weight": 3`},
		{"drain", "POST", "/v1/backends/web-2/drain", "", 200, `"state": "draining"`},
		{"remove", "DELETE", "/v1/backends/web-2", "", 200, `"state": "removed"`},
		{"remove twice", "DELETE", "/v1/backends/web-2", "", 404, "no such backend"},
		{"metrics", "GET", "/metrics", "", 200, "meshlb_ring_rebuilds_total"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, tc.method, adminURL(n, tc.path), tc.body)
			if code != tc.code || !strings.Contains(string(body), tc.want) {
				t.Fatalf("%s %s = %d %s; want %d containing %q", tc.method, tc.path, code, body, tc.code, tc.want)
			}
			if tc.path != "/metrics" && !json.Valid(body) {
				t.Fatalf("body is not JSON: %s", body)
			}
		})
	}

	// The removal reaches the ring through the coalesced rebuild, so ready
	// alone can still see web-2 in the table: wait for the ring to drop it.
	waitFor(t, 5*time.Second, "ready with one backend", func() (bool, string) {
		if ok, why := n.Ready(); !ok {
			return false, why
		}
		return n.Status().Ring.Backends == 1, fmt.Sprintf("%d backends in the ring", n.Status().Ring.Backends)
	})
	code, body := call(t, "GET", adminURL(n, "/v1/route?key=alice"), "")
	var a RouteAnswer
	if err := json.Unmarshal(body, &a); err != nil || code != 200 {
		t.Fatalf("route: %d %s", code, body)
	}
	if a.Key != "alice" || a.Backend != "127.0.0.1:9001" || a.Addr != "127.0.0.1:9001" || len(a.Fingerprint) != 16 {
		t.Fatalf("route = %+v", a)
	}
	code, body = call(t, "GET", adminURL(n, "/v1/backends"), "")
	var list struct{ Backends []BackendStatus }
	if err := json.Unmarshal(body, &list); err != nil || code != 200 || len(list.Backends) != 2 {
		t.Fatalf("backends: %d %s", code, body)
	}
	if b := list.Backends[0]; b.ID != "127.0.0.1:9001" || !b.InRing || b.Origin != "solo" {
		t.Fatalf("backend = %+v", b)
	}
	if b := list.Backends[1]; b.ID != "web-2" || b.State != "removed" || b.InRing {
		t.Fatalf("removed backend = %+v", b)
	}
	code, body = call(t, "GET", adminURL(n, "/v1/status"), "")
	var s Status
	if err := json.Unmarshal(body, &s); err != nil || code != 200 {
		t.Fatalf("status: %d %s", code, body)
	}
	if s.Node != "solo" || len(s.Members) != 1 || s.Members[0].ProxyAddr != n.ProxyAddr() || !s.RingAgreed || !s.ConfigAgreed || s.Ring.Backends != 1 || s.Ring.Partitions == 0 {
		t.Fatalf("status = %+v", s)
	}
}

// The admin API refuses a backend the ring can't take (more backends than
// partitions); if one arrives anyway (from a peer with another config),
// the node keeps the previous ring and says why in the status.
func TestUnbuildableRingKeepsThePreviousOne(t *testing.T) {
	cfg := testConfig(t, "small")
	cfg.Ring.Partitions = 3
	cfg.Ring.ReplicationFactor = 4
	cfg.Ring.Load = 1.25
	n := startNode(t, cfg)
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} {
		if code, b := call(t, "POST", adminURL(n, "/v1/backends"), `{"addr": "`+addr+`"}`); code != 200 {
			t.Fatalf("add: %d %s", code, b)
		}
	}
	waitFor(t, 5*time.Second, "three backends", func() (bool, string) {
		return n.Status().Ring.Backends == 3, "waiting"
	})
	if code, b := call(t, "POST", adminURL(n, "/v1/backends"), `{"addr": "127.0.0.1:4"}`); code != 409 || !strings.Contains(string(b), "partitions") {
		t.Fatalf("fourth backend through the API: %d %s; want 409 naming the partitions", code, b)
	}
	if _, err := n.Cluster().Upsert("127.0.0.1:4", "127.0.0.1:4"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "build error reported", func() (bool, string) {
		s := n.Status()
		return s.Ring.Error != "" && s.Ring.Backends == 3, s.Ring.Error
	})
	if ok, why := n.Ready(); !ok {
		t.Fatalf("not ready (%s) though the previous ring still serves", why)
	}
}

// The profiler is served only when asked for: it shows internals and a
// CPU profile costs CPU.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, on := range []bool{false, true} {
		cfg := testConfig(t, fmt.Sprintf("pprof-%v", on))
		cfg.Pprof = on
		n := startNode(t, cfg)
		res, err := http.Get(adminURL(n, "/debug/pprof/goroutine?debug=1"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		if res.StatusCode != want || on && !strings.Contains(string(body), "goroutine profile") {
			t.Errorf("pprof %v: %d %.80q; want %d", on, res.StatusCode, body, want)
		}
	}
}
