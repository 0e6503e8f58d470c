package node

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/router"
)

func TestMeshConfigFP(t *testing.T) {
	m := func(name string, fp uint64, st gossip.NodeState) gossip.Member {
		return gossip.Member{Name: name, Meta: gossip.Meta{Role: gossip.RoleBalancer, State: st, ConfigFP: fp}}
	}
	tests := []struct {
		name    string
		members []gossip.Member
		self    string
		ours    uint64
		want    uint64
		agree   bool
	}{
		{"alone", nil, "a", 1, 1, true},
		{"all agree", []gossip.Member{m("a", 1, gossip.NodeActive), m("b", 1, gossip.NodeActive)}, "a", 1, 1, true},
		{"minority refuses", []gossip.Member{m("a", 1, gossip.NodeActive), m("b", 2, gossip.NodeActive), m("c", 2, gossip.NodeActive)}, "a", 1, 2, false},
		{"majority serves", []gossip.Member{m("a", 1, gossip.NodeActive), m("b", 2, gossip.NodeActive), m("c", 2, gossip.NodeActive)}, "b", 2, 2, true},
		{"tie goes to the lowest name", []gossip.Member{m("a", 1, gossip.NodeActive), m("b", 2, gossip.NodeActive)}, "b", 2, 1, false},
		{"tie, the lowest name serves", []gossip.Member{m("a", 1, gossip.NodeActive), m("b", 2, gossip.NodeActive)}, "a", 1, 1, true},
		{"leaving members don't count", []gossip.Member{m("a", 1, gossip.NodeActive), m("b", 2, gossip.NodeLeaving), m("c", 2, gossip.NodeLeaving)}, "a", 1, 1, true},
		{"our own meta may lag: ours counts", []gossip.Member{m("a", 9, gossip.NodeActive), m("b", 1, gossip.NodeActive)}, "a", 1, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, agree, _, _ := meshConfigFP(tt.members, tt.self, tt.ours)
			if got != tt.want || agree != tt.agree {
				t.Fatalf("meshConfigFP = %d, %v; want %d, %v", got, agree, tt.want, tt.agree)
			}
		})
	}
}

// TestConfigDriftRefusesTraffic: a node whose ring settings differ from
// the mesh's is not ready and answers 503 with the reason, while the
// others serve; with AllowConfigDrift it serves.
func TestConfigDriftRefusesTraffic(t *testing.T) {
	backend := newToggleBackend(t)
	nodes := newTestCluster(t, 4, func(i int, c *Config) {
		c.Backends = []BackendSpec{{ID: "b", Addr: backend.addr}}
		if i >= 2 {
			c.Ring.Partitions = 271
		}
		c.AllowConfigDrift = i == 3
	})
	waitFor(t, 20*time.Second, "n2 refusing, the others serving", func() (bool, string) {
		for i, n := range nodes {
			ready, why := n.Ready()
			if ready != (i != 2) {
				return false, fmt.Sprintf("%s: ready %v (%s)", n.Name(), ready, why)
			}
		}
		return true, ""
	})
	if _, why := nodes[2].Ready(); !strings.Contains(why, "differs from the mesh's") {
		t.Fatalf("n2 unready because %q", why)
	}
	get := func(n *Node) (int, string) {
		resp, err := http.Get("http://" + n.ProxyAddr() + "/?session_id=x")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(nodes[2]); code != http.StatusServiceUnavailable || !strings.Contains(body, "configuration") {
		t.Fatalf("n2 answered %d %s; want 503 naming the configuration", code, body)
	}
	for _, i := range []int{0, 1, 3} {
		if code, body := get(nodes[i]); code != http.StatusOK {
			t.Fatalf("%s answered %d %s; want 200", nodes[i].Name(), code, body)
		}
	}
	_, err := picker{nodes[2]}.Pick("", []byte("x"), 1)
	if !errors.As(err, new(*router.UnavailableError)) {
		t.Fatalf("n2's picker: %v; want an UnavailableError", err)
	}
}
