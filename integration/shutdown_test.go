package integration

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Stopping every node of a mesh at once, as Ctrl-C or a deploy does, is a
// clean stop on every node: the last ones to leave have no peer left to
// hear them, and that is no failure.
func TestWholeMeshStoppedTogetherExitsZero(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 3, 1, "--drain-delay", "1s")
	var wg sync.WaitGroup
	for _, p := range m.nodes {
		wg.Go(func() { p.cmd.Process.Signal(syscall.SIGTERM) })
	}
	wg.Wait()
	for _, p := range m.nodes {
		if code := p.wait(30 * time.Second); code != 0 {
			t.Errorf("%s exit code after SIGTERM = %d; want 0\n%s", p.name, code, p.output())
		}
	}
}

// A drain held for its whole --drain-timeout by a WebSocket that never
// answers the close frame still leaves the mesh gracefully: the peer sees
// a leave, not a failure.
func TestLeaveAfterADrainThatTimedOut(t *testing.T) {
	t.Parallel()
	const drainTimeout = 2 * time.Second
	m := startMesh(t, 2, 1, "--drain-spread", "0", "--drain-timeout", drainTimeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+m.proxies[1]+"/ws?session_id=held", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	ask(ctx, t, c) // relayed end to end; from here it is never read again

	start := time.Now()
	m.nodes[1].cmd.Process.Signal(syscall.SIGTERM)
	code := m.nodes[1].wait(drainTimeout + 20*time.Second)
	took := time.Since(start)
	if took < drainTimeout {
		t.Fatalf("node stopped in %v; the held WebSocket should have kept it draining for %v", took, drainTimeout)
	}
	t.Logf("stopped in %v, exit code %d", took.Round(time.Millisecond), code)

	waitFor(t, 10*time.Second, "n0 logs that n1 is gone", func() (bool, string) {
		_, seen := peerGone(m.nodes[0].output(), "n1")
		return seen, "no member gone line yet"
	})
	if failed, _ := peerGone(m.nodes[0].output(), "n1"); failed != "" {
		t.Fatalf("n0 saw n1 fail, not leave: %s\n--- n1 log:\n%s", failed, m.nodes[1].output())
	}
}

// peerGone reads a node's JSON log for the line saying peer is gone. A peer
// that announced its leave in its meta is logged as left even when its
// memberlist leave never came; memberlist's failure detector tells the
// two apart, so failed is its line declaring peer dead, if any.
func peerGone(log, peer string) (failed string, seen bool) {
	for line := range strings.Lines(log) {
		var l struct {
			Message string `json:"message"`
			Line    string `json:"line"`
			Peer    string `json:"peer"`
			Left    bool   `json:"left"`
		}
		if json.Unmarshal([]byte(line), &l) != nil {
			continue
		}
		switch {
		case strings.Contains(l.Line, "Marking "+peer+" as failed"):
			failed = l.Line
		case l.Message == "member gone" && l.Peer == peer:
			if !l.Left {
				failed = "member gone, left false"
			}
			return failed, true
		}
	}
	return failed, false
}
