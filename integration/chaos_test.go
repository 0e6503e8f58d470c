package integration

import (
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Chaos scenarios on loopback, with `meshlb bench` as the checker: a node
// killed, a rolling restart and a backend killed, all under load.
// netns_test.go runs them across network namespaces, with partitions.

// kill -9 of a node under 1,000 sessions: every session that was on it
// reconnects through another node to the same backend.
func TestChaosKillNodeUnder1000Sessions(t *testing.T) {
	m := startMesh(t, 3, 3)
	r, code := bench(t, 6*time.Second, func() {
		m.nodes[2].cmd.Process.Kill()
	}, "--nodes", strings.Join(m.proxies, ","), "--admin", m.admins[0]+","+m.admins[1],
		"--sessions", "1000", "--rate", "500", "--duration", "14s", "--whoami-interval", "500ms",
		"--connect-timeout", "10s", "--request-timeout", "10s")
	if code != 0 || r.Verdict != "pass" {
		t.Fatalf("exit %d, verdict %s %v; want a pass", code, r.Verdict, r.Reasons)
	}
	if r.SessionsAnswered != 1000 || r.SessionsMoved != 0 || r.Misroutes != 0 {
		t.Fatalf("%d of 1000 answered, %d moved, %d misroutes; want 1000, 0, 0", r.SessionsAnswered, r.SessionsMoved, r.Misroutes)
	}
	// A third of the sessions were on the killed node (round robin).
	if r.Reconnects < 250 {
		t.Fatalf("%d reconnects; want the killed node's ~333 sessions back", r.Reconnects)
	}
	t.Logf("1000 sessions, %d reconnects after kill -9, 0 moved, 0 misroutes", r.Reconnects)
	// The survivors list the killed node as failed, not just fewer members.
	out, errOut, code := cli(t, "status", "--admin-url", "http://"+m.admins[0])
	if code != 0 {
		t.Fatalf("meshlb status exit %d: %s", code, errOut)
	}
	if !regexp.MustCompile(`(?m)^n2\s+failed \d`).MatchString(out) {
		t.Fatalf("meshlb status does not list n2 as failed:\n%s", out)
	}
}

// A rolling restart (SIGTERM, wait for exit 0, start again on the same
// addresses) of every node under load: no session changes backend, every
// client of a stopping node gets a close frame, none a reset.
func TestChaosRollingRestart(t *testing.T) {
	m := startMesh(t, 3, 3)
	done := make(chan struct{})
	var restarts []string
	go func() {
		defer close(done)
		time.Sleep(3 * time.Second)
		for i := range m.nodes {
			if err := m.nodes[i].cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Error(err)
				return
			}
			if code := m.nodes[i].wait(30 * time.Second); code != 0 {
				t.Errorf("n%d exit %d after SIGTERM; want 0", i, code)
				return
			}
			var join []string
			for j, g := range m.gossips {
				if j != i {
					join = append(join, g)
				}
			}
			args := append(append([]string(nil), m.flags...), "--gossip-addr", m.gossips[i], "--listen", m.proxies[i],
				"--admin", m.admins[i], "--join", strings.Join(join, ","))
			start := time.Now()
			p, _ := startNodeNoFatal(t, fmt.Sprintf("n%d", i), args...)
			if p == nil {
				return
			}
			m.nodes[i] = p
			for time.Since(start) < 30*time.Second {
				if ok, _ := oneRing(m.admins, 3, 3)(); ok {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			restarts = append(restarts, time.Since(start).Round(10*time.Millisecond).String())
			time.Sleep(2 * time.Second)
		}
	}()
	r, code := bench(t, 0, nil, "--nodes", strings.Join(m.proxies, ","), "--admin", strings.Join(m.admins, ","),
		"--sessions", "300", "--rate", "300", "--duration", "25s", "--whoami-interval", "500ms",
		"--connect-timeout", "10s", "--request-timeout", "10s")
	<-done
	t.Logf("restarts back in one ring after %v", restarts)
	if code != 0 || r.Verdict != "pass" {
		t.Fatalf("exit %d, verdict %s %v; want a pass", code, r.Verdict, r.Reasons)
	}
	if len(restarts) != 3 {
		t.Fatalf("%d of 3 nodes restarted", len(restarts))
	}
	if r.SessionsMoved != 0 || r.Misroutes != 0 {
		t.Fatalf("%d sessions moved, %d misroutes; want none", r.SessionsMoved, r.Misroutes)
	}
	closes := r.CloseCodes["1001"] + r.CloseCodes["1012"]
	if r.Resets != 0 || r.Disconnects["eof"] != 0 || closes < 250 {
		t.Fatalf("disconnects %v; want only close frames (1001/1012), one per session of each stopped node", r.Disconnects)
	}
	t.Logf("300 sessions through 3 rolling restarts: %d reconnects, %d close frames, 0 resets, 0 moved", r.Reconnects, closes)
}

// A backend killed under load: only its sessions move, each to the ring's
// next candidate for its key, which is the backend the ring gives it once
// health has taken the dead one out.
func TestChaosKillBackendMovesOnlyItsSessions(t *testing.T) {
	m := startMesh(t, 3, 4)
	victim := "web-3"
	r, code := bench(t, 5*time.Second, func() {
		m.backends[victim].cmd.Process.Kill()
	}, "--nodes", strings.Join(m.proxies, ","), "--admin", strings.Join(m.admins, ","),
		"--sessions", "400", "--rate", "400", "--duration", "14s", "--whoami-interval", "500ms",
		"--connect-timeout", "10s", "--request-timeout", "10s")
	if code != 0 || r.Verdict != "pass" || r.Misroutes != 0 {
		t.Fatalf("exit %d, verdict %s %v, %d misroutes; want a pass", code, r.Verdict, r.Reasons, r.Misroutes)
	}
	if r.SessionsMoved == 0 || len(r.Moves) != r.SessionsMoved {
		t.Fatalf("%d sessions moved, %d moves listed; want the victim's sessions, each once", r.SessionsMoved, len(r.Moves))
	}
	waitFor(t, 10*time.Second, "the victim out of every ring", oneRing(m.admins, 3, 3))
	for _, mv := range r.Moves {
		if mv.From != victim {
			t.Fatalf("session %s moved %s -> %s; only %s's sessions may move", mv.Session, mv.From, mv.To, victim)
		}
		if want := route(t, m.admins[1], mv.Session); mv.To != want {
			t.Fatalf("session %s moved to %s; the ring now gives %s", mv.Session, mv.To, want)
		}
	}
	t.Logf("400 sessions, backend killed: %d moved, all from %s to the ring's next candidate; 0 misroutes", r.SessionsMoved, victim)
}

// startNodeNoFatal is startNode for a goroutine other than the test's: it
// reports a failure with t.Error and returns nil.
func startNodeNoFatal(t *testing.T, name string, args ...string) (*proc, startedLine) {
	p := run(t, name, append([]string{"node", "--name", name, "--log-format", "json"}, args...)...)
	select {
	case s := <-p.started:
		return p, s
	case <-p.exited:
		t.Errorf("%s exited at start: %v\n%s", name, p.err, p.output())
	case <-time.After(20 * time.Second):
		t.Errorf("%s did not start\n%s", name, p.output())
	}
	return nil, startedLine{}
}
