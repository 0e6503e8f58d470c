package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/testlog"
)

// lockedBuffer is a log sink the test reads while the node writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The leave keeps its budget whatever the drain does: given a deadline
// that a held WebSocket would use up entirely, Shutdown ends the drain
// early enough for the leave, and the peer sees a leave, not a failure
// (before, the drain took it all and the leave got a millisecond).
func TestLeaveKeepsItsBudget(t *testing.T) {
	const (
		drainTimeout = 3 * time.Second
		leaveTimeout = time.Second
	)
	addr := gobwasBackend(t)
	var peerLog lockedBuffer
	cfg0 := testConfig(t, "n0")
	cfg0.Backends = []BackendSpec{{ID: "b", Addr: addr}}
	cfg0.Logger = zerolog.New(io.MultiWriter(&peerLog, testlog.Writer(t))).Level(zerolog.InfoLevel)
	n0 := startNode(t, cfg0)
	cfg1 := testConfig(t, "n1", n0.GossipAddr())
	cfg1.DrainTimeout = drainTimeout
	cfg1.LeaveTimeout = leaveTimeout
	n1 := startNode(t, cfg1)
	waitFor(t, 10*time.Second, "converged", converged([]*Node{n0, n1}, 1))

	// A WebSocket through n1 that is never read again: it does not answer
	// the drain's close frame, so it holds the drain until its deadline.
	c, _, _, err := ws.Dial(context.Background(), "ws://"+n1.ProxyAddr()+"/ws?session_id=held")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte("hold"))))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatalf("echo through n1: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	before := len(peerLog.String())
	start := time.Now()
	err = n1.Shutdown(ctx)
	took := time.Since(start)
	t.Logf("shutdown took %v: %v", took.Round(time.Millisecond), err)
	if took < drainTimeout-leaveTimeout-100*time.Millisecond {
		t.Fatalf("shutdown took %v; the held WebSocket should have kept the drain going until %v before the deadline", took, leaveTimeout)
	}

	waitFor(t, 10*time.Second, "n0 logs that n1 is gone", func() (bool, string) {
		_, seen := peerGone(peerLog.String()[before:], "n1")
		return seen, "no member gone line yet"
	})
	if failed, _ := peerGone(peerLog.String()[before:], "n1"); failed != "" {
		t.Fatalf("n0 saw n1 fail, not leave: %s", failed)
	}
}

// peerGone reads a node's JSON log for the line saying peer is gone. A peer
// that announced its leave in its meta is logged as left even when its
// memberlist leave never came; memberlist's failure detector tells the
// two apart, so failed is its line declaring peer dead, if any. (A
// suspicion alone does not count: under load one can be raised and
// refuted while the peer is still draining.)
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
