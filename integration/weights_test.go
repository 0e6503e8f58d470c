package integration

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestWeightedShares: backends weighted 1:2:3:4, given by --backend
// options and by `meshlb backends add --weight`, own 10/20/30/40 % of the
// ring within 5 % of each share on every node, with identical ring
// fingerprints, and every node routes sampled keys alike. (1 M keys are
// measured in ring.TestWeightedShares; a key's share is its partitions'.)
func TestWeightedShares(t *testing.T) {
	t.Parallel()
	addrs := make([]string, 4)
	for i := range addrs {
		_, addrs[i] = startEcho(t, fmt.Sprintf("w-%d", i+1))
	}
	_, s0 := startNode(t, "wn0", "--backend", "w-1="+addrs[0]+",weight=1,w-2="+addrs[1]+",weight=2", "--backend", "w-3="+addrs[2]+",weight=3")
	admins := []string{s0.AdminAddr}
	for i := 1; i < 3; i++ {
		_, s := startNode(t, fmt.Sprintf("wn%d", i), "--join", s0.GossipAddr)
		admins = append(admins, s.AdminAddr)
	}
	waitFor(t, 30*time.Second, "one ring of 3", oneRing(admins, 3, 3))
	if out, errOut, code := cli(t, "backends", "add", "w-4="+addrs[3], "--weight", "4", "--admin-url", "http://"+admins[2]); code != 0 {
		t.Fatalf("backends add --weight: exit %d: %s%s", code, out, errOut)
	}
	if out, _, code := cli(t, "backends", "add", "w-5=127.0.0.1:1", "--weight", "0", "--admin-url", "http://"+admins[1]); code == 0 {
		t.Fatalf("weight 0 accepted: %s", out)
	}
	waitFor(t, 15*time.Second, "one ring of 4", oneRing(admins, 3, 4))

	want := map[string]float64{"w-1": 0.1, "w-2": 0.2, "w-3": 0.3, "w-4": 0.4}
	fp := ""
	for _, a := range admins {
		var st struct {
			Ring struct {
				Fingerprint string             `json:"fingerprint"`
				Shares      map[string]float64 `json:"shares"`
			} `json:"ring"`
		}
		getJSON(t, "http://"+a+"/ui/api/state", &st)
		if fp != "" && st.Ring.Fingerprint != fp {
			t.Fatalf("%s: fingerprint %s, another node %s", a, st.Ring.Fingerprint, fp)
		}
		fp = st.Ring.Fingerprint
		for id, w := range want {
			got := st.Ring.Shares[id]
			t.Logf("%s: %s share %.2f %% (want %.0f %%)", a, id, 100*got, 100*w)
			if math.Abs(got/w-1) > 0.05 {
				t.Errorf("%s: %s share %.4f, want %.2f ± 5 %%", a, id, got, w)
			}
		}
	}
	for i := range 300 {
		key := fmt.Sprintf("user-%d", i)
		var first string
		for _, a := range admins {
			var r struct {
				Backend string `json:"backend"`
			}
			getJSON(t, "http://"+a+"/v1/route?key="+url.QueryEscape(key), &r)
			if first == "" {
				first = r.Backend
			} else if r.Backend != first {
				t.Fatalf("key %s: %s on one node, %s on another", key, first, r.Backend)
			}
		}
	}
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}
