package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// `meshlb backends drain ID --close-sessions --spread 2s` under 300
// sessions through 3 nodes: every session of that backend, whichever node
// it came through, gets 1012 within the spread; no other session is
// touched; each closed one reconnects through another node to its new
// owner (0 misroutes); undrain gives the backend its keys back.
func TestDrainCloseSessions(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 3, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const sessions = 300
	type sess struct {
		id      string
		node    int
		c       *websocket.Conn
		backend string
	}
	all := make([]*sess, sessions)
	for i := range all {
		s := &sess{id: fmt.Sprintf("cs-%d", i), node: i % 3}
		c, _, err := websocket.Dial(ctx, "ws://"+m.proxies[s.node]+"/ws?session_id="+s.id, nil)
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		defer c.CloseNow()
		s.c = c
		s.backend = ask(ctx, t, c)
		all[i] = s
	}
	victim := all[0].backend
	var mine int
	for _, s := range all {
		if s.backend == victim {
			mine++
		}
	}

	// meshlb backends shows each backend's sessions summed over the mesh.
	waitFor(t, 15*time.Second, "the victim's sessions in meshlb backends", func() (bool, string) {
		out, errOut, code := cli(t, "backends", "--json", "--admin-url", "http://"+m.admins[2])
		var l struct {
			Backends []struct {
				ID       string `json:"id"`
				Sessions int    `json:"sessions"`
			} `json:"backends"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &l) != nil {
			return false, fmt.Sprintf("exit %d: %s%s", code, out, errOut)
		}
		for _, b := range l.Backends {
			if b.ID == victim && b.Sessions == mine {
				return true, ""
			}
		}
		return false, out
	})

	// Every session reads until its connection ends; only the victim's may.
	closed := make(chan *sess, sessions)
	var wg sync.WaitGroup
	rctx, rcancel := context.WithCancel(ctx)
	for _, s := range all {
		wg.Go(func() {
			_, _, err := s.c.Read(rctx)
			if rctx.Err() != nil {
				return
			}
			if code := websocket.CloseStatus(err); code != websocket.StatusServiceRestart {
				t.Errorf("session %s on %s ended with %v (close status %d); want 1012", s.id, s.backend, err, code)
			}
			closed <- s
		})
	}
	start := time.Now()
	out, errOut, code := cli(t, "backends", "drain", victim, "--close-sessions", "--spread", "2s", "--admin-url", "http://"+m.admins[1])
	if code != 0 || !strings.Contains(out, victim) {
		t.Fatalf("drain --close-sessions: exit %d\n%s%s", code, out, errOut)
	}
	got := 0
	timeout := time.After(20 * time.Second)
	for got < mine {
		select {
		case s := <-closed:
			if s.backend != victim {
				t.Fatalf("session %s on %s was closed; only %s's should be", s.id, s.backend, victim)
			}
			got++
		case <-timeout:
			t.Fatalf("after 20s %d of %s's %d sessions were closed", got, victim, mine)
		}
	}
	took := time.Since(start)
	// Give a stray close a moment to show before the readers stop.
	select {
	case s := <-closed:
		t.Fatalf("session %s on %s was closed too", s.id, s.backend)
	case <-time.After(500 * time.Millisecond):
	}
	rcancel()
	wg.Wait()
	t.Logf("%d sessions, %d on %s closed with 1012 in %v", sessions, mine, victim, took.Round(time.Millisecond))

	// Each reconnects through the next node and lands where the mesh says.
	misroutes := 0
	for _, s := range all {
		if s.backend != victim {
			continue
		}
		proxy := m.proxies[(s.node+1)%3]
		c, _, err := websocket.Dial(ctx, "ws://"+proxy+"/ws?session_id="+s.id, nil)
		if err != nil {
			t.Fatalf("reconnect %s: %v", s.id, err)
		}
		b := ask(ctx, t, c)
		c.CloseNow()
		if want := route(t, m.admins[(s.node+2)%3], s.id); b != want || b == victim {
			misroutes++
			t.Errorf("session %s reconnected to %s; the mesh routes it to %s (drained: %s)", s.id, b, want, victim)
		}
	}
	t.Logf("%d reconnects, %d misroutes", mine, misroutes)

	if out, errOut, code := cli(t, "backends", "undrain", victim, "--admin-url", "http://"+m.admins[2]); code != 0 {
		t.Fatalf("undrain: exit %d\n%s%s", code, out, errOut)
	}
	waitFor(t, 10*time.Second, "the victim's keys back on every node", func() (bool, string) {
		for i := range m.admins {
			if b := route(t, m.admins[i], all[0].id); b != victim {
				return false, fmt.Sprintf("n%d routes %s to %s", i, all[0].id, b)
			}
		}
		return true, ""
	})
	if b, _ := whoami(t, m.proxies[1], "session_id="+all[0].id, nil); b != victim {
		t.Fatalf("after undrain %s reached %s; want %s", all[0].id, b, victim)
	}

	// Bad requests are refused with a reason, and change nothing.
	for _, args := range [][]string{
		{"backends", "undrain", victim, "--close-sessions"},
		{"backends", "drain", victim, "--spread", "2s"},
	} {
		if _, errOut, code := cli(t, append(args, "--admin-url", "http://"+m.admins[0])...); code != 2 || errOut == "" {
			t.Errorf("meshlb %v: exit %d, %q; want 2 and a reason", args, code, errOut)
		}
	}
}
