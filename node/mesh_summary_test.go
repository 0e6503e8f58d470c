package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestLoadSummaryRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    loadSummary
	}{
		{"idle", loadSummary{Backends: map[string]int64{}}},
		{"some", loadSummary{HandshakesPerSec: 12.5, RequestsPerSec: 3, ErrorsPerSec: 0.25, Sessions: 30,
			Backends: map[string]int64{"b1": 10, "b2": 20}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeLoad(encodeLoad(tc.s))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.s) {
				t.Fatalf("decode(encode(%v)) = %v", tc.s, got)
			}
		})
	}
}

// TestLoadSummaryBounded: a node with more backends than fit keeps its
// busiest ones, counts the rest as other, and stays within the kind's
// bound; the total is exact.
func TestLoadSummaryBounded(t *testing.T) {
	s := loadSummary{Backends: map[string]int64{}}
	for i := range 200 {
		s.Backends[fmt.Sprintf("%s-%03d", strings.Repeat("b", 40), i)] = int64(i + 1)
		s.Sessions += int64(i + 1)
	}
	v := encodeLoad(s)
	if len(v) > maxLoadValue {
		t.Fatalf("%d bytes; want at most %d", len(v), maxLoadValue)
	}
	got, err := decodeLoad(v)
	if err != nil {
		t.Fatal(err)
	}
	var listed int64
	for id, k := range got.Backends {
		if s.Backends[id] != k {
			t.Fatalf("%s: %d; want %d", id, k, s.Backends[id])
		}
		listed += k
	}
	if got.Sessions != s.Sessions || listed+got.Other != s.Sessions || len(got.Backends) == 0 {
		t.Fatalf("total %d, listed %d + other %d; want %d", got.Sessions, listed, got.Other, s.Sessions)
	}
	if _, ok := got.Backends[fmt.Sprintf("%s-%03d", strings.Repeat("b", 40), 199)]; !ok {
		t.Fatal("the busiest backend was left out")
	}
}

func FuzzDecodeLoad(f *testing.F) {
	f.Add(encodeLoad(loadSummary{Sessions: 3, Backends: map[string]int64{"b1": 3}}))
	f.Add([]byte{1})
	f.Add([]byte{1, 0, 0, 0, 0, 5, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeLoad(b)
		if err != nil {
			return
		}
		if again, err := decodeLoad(encodeLoad(s)); err != nil || again.Sessions != s.Sessions {
			t.Fatalf("re-encode of %v: %v, %v", s, again, err)
		}
	})
}

func TestDiffEvents(t *testing.T) {
	ev := newEventLog(8)
	prev := meshState{members: map[string]string{"n0": "active", "n1": "active"}, backends: map[string]string{"b1": "active", "b2": "active"}, ringFP: 1}
	cur := meshState{members: map[string]string{"n0": "active", "n2": "active"}, backends: map[string]string{"b1": "unhealthy", "b2": "draining", "b3": "active"}, ringFP: 2, ringN: 1}
	diffEvents(ev, prev, cur)
	var got []string
	for _, e := range ev.list() {
		got = append(got, e.Kind+": "+e.Detail)
	}
	want := []string{
		"join: node n2 joined (active)",
		"leave: node n1 left or failed",
		"backend: backend b1 ejected (a quorum sees it down)",
		"backend: backend b2 draining",
		"backend: backend b3 added (active)",
		"ring: ring rebuilt: 1 backends, fingerprint 0000000000000002",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := range 20 { // bounded, oldest dropped
		ev.add("ring", "r%d", i)
	}
	if l := ev.list(); len(l) != 8 || l[7].Detail != "r19" {
		t.Fatalf("ring buffer holds %d, last %q", len(l), l[len(l)-1].Detail)
	}
}

// TestMeshViewAndUndrain: two nodes see each other's summaries in
// /v1/mesh, the dashboard's files and state are served, and undrain
// brings a drained backend back.
func TestMeshViewAndUndrain(t *testing.T) {
	addr := trafficBackend(t)
	nodes := newTestCluster(t, 2, func(i int, c *Config) {
		if i == 0 {
			c.Backends = []BackendSpec{{ID: "b1", Addr: addr}}
		}
	})
	waitFor(t, 10*time.Second, "converged", converged(nodes, 1))
	s := openSession(t, nodes[1].ProxyAddr(), "k1")
	defer s.conn.Close()
	waitFor(t, 3*summaryInterval, "n1's session in n0's mesh view", func() (bool, string) {
		v := nodes[0].MeshView()
		return len(v.Nodes) == 2 && v.Backends["b1"] == 1 && v.Sessions == 1, fmt.Sprintf("%+v", v)
	})
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/style.css", "/ui/api/state", "/v1/mesh"} {
		if code, _ := call(t, "GET", adminURL(nodes[0], p), ""); code != http.StatusOK {
			t.Errorf("GET %s = %d", p, code)
		}
	}
	if code, _ := call(t, "POST", adminURL(nodes[0], "/v1/backends/b1/drain"), ""); code != 200 {
		t.Fatalf("drain = %d", code)
	}
	waitFor(t, 10*time.Second, "drained", converged(nodes, 0))
	if code, _ := call(t, "POST", adminURL(nodes[1], "/v1/backends/b1/undrain"), ""); code != 200 {
		t.Fatalf("undrain = %d", code)
	}
	waitFor(t, 10*time.Second, "back", converged(nodes, 1))
	if code, _ := call(t, "POST", adminURL(nodes[1], "/v1/backends/nope/undrain"), ""); code != 404 {
		t.Fatalf("undrain of an unknown backend = %d; want 404", code)
	}
}

// TestUIStreamEndsOnShutdown: the dashboard's event stream sends the
// state at once and ends when the node stops, so that the admin server's
// shutdown does not wait for it.
func TestUIStreamEndsOnShutdown(t *testing.T) {
	n := startNode(t, testConfig(t, "n0"))
	resp, err := http.Get(adminURL(n, "/ui/api/stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "data: {") || !strings.Contains(line, `"node":"n0"`) {
		t.Fatalf("first event %q, %v", line, err)
	}
	start := time.Now()
	stopNode(n)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %v with a stream open", d)
	}
	if _, err := io.Copy(io.Discard, br); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("stream ended with %v", err)
	}
}
