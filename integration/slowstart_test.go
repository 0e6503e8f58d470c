package integration

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestSlowStart: a backend added with --slow-start 8s takes a share of
// keys that rises from 0 to its ring share, sampled through all three
// nodes, which answer alike.
func TestSlowStart(t *testing.T) {
	t.Parallel()
	const ramp = 8 * time.Second
	addrs := make([]string, 4)
	for i := range addrs {
		_, addrs[i] = startEcho(t, fmt.Sprintf("ss-%d", i+1))
	}
	common := []string{"--slow-start", ramp.String()}
	_, s0 := startNode(t, "sn0", append(common, "--backend", "ss-1="+addrs[0]+",ss-2="+addrs[1]+",ss-3="+addrs[2])...)
	admins := []string{s0.AdminAddr}
	for i := 1; i < 3; i++ {
		_, s := startNode(t, fmt.Sprintf("sn%d", i), append(common, "--join", s0.GossipAddr)...)
		admins = append(admins, s.AdminAddr)
	}
	waitFor(t, 30*time.Second, "one ring of 3", oneRing(admins, 3, 3))
	// The first three were added at start: wait out their own ramp.
	waitFor(t, 3*ramp, "the first backends' ramp over", func() (bool, string) {
		for i := range 50 {
			var r struct {
				ChosenBy string `json:"chosen_by"`
			}
			getJSON(t, "http://"+admins[0]+"/v1/route?key="+url.QueryEscape(fmt.Sprintf("ss-key-%d", i)), &r)
			if r.ChosenBy != "ring" {
				return false, fmt.Sprintf("key %d chosen by %s", i, r.ChosenBy)
			}
		}
		return true, ""
	})
	if out, errOut, code := cli(t, "backends", "add", "ss-4="+addrs[3], "--admin-url", "http://"+admins[1]); code != 0 {
		t.Fatalf("backends add: exit %d: %s%s", code, out, errOut)
	}
	added := time.Now()
	waitFor(t, 15*time.Second, "one ring of 4", oneRing(admins, 3, 4))

	const keys = 200
	type route struct {
		Backend  string `json:"backend"`
		ChosenBy string `json:"chosen_by"`
	}
	var shares []int
	disagree := 0
	for {
		elapsed := time.Since(added)
		onNew := 0
		for i := range keys {
			var first string
			for j, a := range admins {
				var r route
				getJSON(t, "http://"+a+"/v1/route?key="+url.QueryEscape(fmt.Sprintf("ss-key-%d", i)), &r)
				if j == 0 {
					first = r.Backend
				} else if r.Backend != first {
					disagree++
				}
			}
			if first == "ss-4" {
				onNew++
			}
		}
		shares = append(shares, onNew)
		t.Logf("%5.1fs after the add: ss-4 has %d of %d sampled keys", elapsed.Seconds(), onNew, keys)
		if elapsed > ramp+time.Second {
			break
		}
		time.Sleep(700 * time.Millisecond)
	}
	for i := 1; i < len(shares); i++ {
		if shares[i] < shares[i-1] {
			t.Errorf("share fell from %d to %d", shares[i-1], shares[i])
		}
	}
	last := shares[len(shares)-1]
	if last < keys/8 || shares[0] > last/2 {
		t.Errorf("shares %v: want a start near 0 and an end near a quarter of %d", shares, keys)
	}
	// Nodes answer within milliseconds of each other; a key may cross the
	// ramp in between, rarely.
	if disagree > keys/50 {
		t.Errorf("%d answers differed between nodes", disagree)
	}
	t.Logf("%d answers of %d differed between nodes", disagree, len(shares)*keys*2)
}

// TestSlowStartBench: `meshlb bench` through a mesh with --slow-start
// while a backend is added and then a node is killed (its sessions
// reconnect through the others, mid-ramp): no misroute.
func TestSlowStartBench(t *testing.T) {
	m := startMesh(t, 3, 3, "--slow-start", "4s")
	waitFor(t, 20*time.Second, "the first backends' ramp over", func() (bool, string) {
		for i := range 50 {
			var r struct {
				ChosenBy string `json:"chosen_by"`
			}
			getJSON(t, "http://"+m.admins[0]+"/v1/route?key="+url.QueryEscape(fmt.Sprintf("k-%d", i)), &r)
			if r.ChosenBy != "ring" {
				return false, fmt.Sprintf("key %d chosen by %s", i, r.ChosenBy)
			}
		}
		return true, ""
	})
	_, addr := startEcho(t, "web-4")
	r, code := bench(t, 2*time.Second, func() {
		if out, errOut, code := cli(t, "backends", "add", "web-4="+addr, "--admin-url", "http://"+m.admins[0]); code != 0 {
			t.Errorf("backends add: exit %d: %s%s", code, out, errOut)
		}
		time.Sleep(time.Second)
		m.nodes[1].cmd.Process.Kill()
	}, "--nodes", strings.Join(m.proxies, ","), "--admin", m.admins[0]+","+m.admins[2],
		"--sessions", "60", "--duration", "10s", "--whoami-interval", "250ms", "--move-window", "6s",
		"--connect-timeout", "10s", "--request-timeout", "10s")
	if r.Misroutes != 0 || r.SessionsAnswered != 60 {
		t.Fatalf("exit %d, verdict %s %v: %d misroutes, %d answered; want 0 misroutes", code, r.Verdict, r.Reasons, r.Misroutes, r.SessionsAnswered)
	}
	t.Logf("exit %d, verdict %s: %d reconnects, %d moved with the set change, 0 misroutes", code, r.Verdict, r.Reconnects, r.MovedSetChanged)
}
