package demo

import (
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startTestMesh(t *testing.T) *Mesh {
	t.Helper()
	var err error
	for range 5 { // the demo's ports are fixed offsets from a base: try a few bases
		var m *Mesh
		if m, err = StartMesh(MeshConfig{BasePort: 20000 + rand.IntN(20000)}); err == nil {
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				m.Shutdown(ctx)
			})
			return m
		}
	}
	t.Fatalf("no free port range for the demo: %v", err)
	return nil
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestDemoMesh(t *testing.T) {
	m := startTestMesh(t)
	proxies := m.NodeProxies()
	// Wait until every node runs the ring with all three backends.
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range m.NodeAdmins() {
		for {
			code, body, _ := get(t, "http://"+a+"/v1/status")
			var s struct {
				Ring       struct{ Backends int }
				RingAgreed bool `json:"ring_agreed"`
			}
			if code == 200 && json.Unmarshal([]byte(body), &s) == nil && s.Ring.Backends == 3 && s.RingAgreed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s not ready: %d %s", a, code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	_, body, _ := get(t, "http://"+proxies[0]+"/?session_id=alice")
	want := strings.TrimSpace(body)
	for _, p := range proxies[1:] {
		if _, body, _ := get(t, "http://"+p+"/?session_id=alice"); strings.TrimSpace(body) != want {
			t.Fatalf("alice reached %q through %s and %q through the first node", body, p, want)
		}
	}
	if code, body, _ := get(t, m.PageURL()); code != 200 || !strings.Contains(body, "meshlb demo") {
		t.Fatalf("page: %d", code)
	}
	code, body, _ := get(t, m.PageURL()+"api/state")
	var st struct{ Nodes, Backends []partState }
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 || len(st.Nodes) != 3 || len(st.Backends) != 3 {
		t.Fatalf("state: %d %s", code, body)
	}

	post := func(path string, withHeader bool) int {
		req, _ := http.NewRequest("POST", m.PageURL()+path, nil)
		if withHeader {
			req.Header.Set("X-Meshlb-Demo", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("api/backends/"+want+"/stop", false); code != http.StatusForbidden {
		t.Fatalf("control without the page's header: %d; want 403", code)
	}
	if code := post("api/backends/"+want+"/stop", true); code != http.StatusNoContent {
		t.Fatalf("stop %s: %d", want, code)
	}
	// Its sessions fail over to the same next candidate through every node.
	var next string
	for _, p := range proxies {
		_, body, _ := get(t, "http://"+p+"/?session_id=alice")
		got := strings.TrimSpace(body)
		if got == want || (next != "" && got != next) {
			t.Fatalf("with %s stopped alice reached %q through %s (others: %q)", want, got, p, next)
		}
		next = got
	}
	if code := post("api/backends/"+want+"/start", true); code != http.StatusNoContent {
		t.Fatalf("start %s: %d", want, code)
	}
	if code := post("api/nodes/node-b/stop", true); code != http.StatusNoContent {
		t.Fatalf("stop node-b: %d", code)
	}
	if code := post("api/nodes/node-b/start", true); code != http.StatusNoContent {
		t.Fatalf("start node-b: %d", code)
	}
}
