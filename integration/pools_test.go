package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestTwoPoolsOnTwoPaths: two pools behind one mesh of 3 nodes, routed by
// path (the third, default, pool gets the rest). Every session reaches a
// backend of its own pool, the same one through every node, the one
// /v1/route names for that pool; a backend of one pool never gets the
// other's sessions, even when a pool loses a backend. The chat pool is
// keyed by its own source (the room), the others by the session ID. A
// node started without the mesh's routes serves nothing.
func TestTwoPoolsOnTwoPaths(t *testing.T) {
	t.Parallel()
	addrs := map[string]string{}
	procs := map[string]*proc{}
	for _, id := range []string{"rides-1", "rides-2", "chat-1", "chat-2", "web-1"} {
		procs[id], addrs[id] = startEcho(t, id)
	}
	flags := []string{
		"--backend", "rides-1=" + addrs["rides-1"] + ",pool=rides,rides-2=" + addrs["rides-2"] + ",pool=rides",
		"--backend", "chat-1=" + addrs["chat-1"] + ",pool=chat",
		"--backend", "web-1=" + addrs["web-1"],
		"--route", "path=/ws,pool=rides", "--route", "path=/chat/,pool=chat",
		"--pool-route-key", "chat=query:room,ip",
		"--drain-delay", "0",
	}
	var proxies, admins []string
	seed := ""
	for i := range 3 {
		args := append([]string(nil), flags...)
		if i > 0 {
			args = append(args, "--join", seed)
		}
		_, s := startNode(t, fmt.Sprintf("pn%d", i), args...)
		if i == 0 {
			seed = s.GossipAddr
		}
		proxies, admins = append(proxies, s.ProxyAddr), append(admins, s.AdminAddr)
	}
	if out, errOut, code := cli(t, "backends", "add", "chat-2="+addrs["chat-2"], "--pool", "chat", "--admin-url", "http://"+admins[2]); code != 0 {
		t.Fatalf("backends add --pool: exit %d: %s%s", code, out, errOut)
	}
	waitFor(t, 30*time.Second, "one ring of 5 backends in 3 pools", oneRing(admins, 3, 5))

	pools := map[string]string{"rides": "/ws", "chat": "/chat/room", "default": "/other"}
	owners := map[string]map[string]string{} // pool → session → backend
	for pool, path := range pools {
		owners[pool] = map[string]string{}
		for i := range 40 {
			sid := fmt.Sprintf("user-%d", i)
			want := routeIn(t, admins[i%3], sid, pool)
			if !strings.HasPrefix(want, map[string]string{"rides": "rides-", "chat": "chat-", "default": "web-"}[pool]) {
				t.Fatalf("/v1/route puts %s of pool %s on %s", sid, pool, want)
			}
			for _, p := range proxies {
				if got := whoamiAt(t, p, path, query(pool, sid)); got != want {
					t.Fatalf("session %s on %s through %s reached %s; /v1/route says %s of pool %s", sid, path, p, got, want, pool)
				}
			}
			owners[pool][sid] = want
		}
	}
	for _, pool := range []string{"rides", "chat"} {
		seen := map[string]bool{}
		for _, b := range owners[pool] {
			seen[b] = true
		}
		if len(seen) != 2 {
			t.Errorf("pool %s: 40 sessions on %v; want both of its backends used", pool, seen)
		}
	}
	out, _, code := cli(t, "route", "user-1", "--path", "/ws/x", "--admin-url", "http://"+admins[1])
	if code != 0 || !strings.Contains(out, "pool rides") || !strings.Contains(out, owners["rides"]["user-1"]) {
		t.Errorf("meshlb route --path /ws/x: exit %d: %q", code, out)
	}

	// A pool losing a backend moves its sessions within the pool only.
	procs["rides-1"].cmd.Process.Kill()
	waitFor(t, 30*time.Second, "rides-1 out of every ring", oneRing(admins, 3, 4))
	for pool, path := range pools {
		for sid, before := range owners[pool] {
			got := whoamiAt(t, proxies[len(sid)%3], path, query(pool, sid))
			switch {
			case pool == "rides" && got != "rides-2":
				t.Fatalf("session %s of rides reached %s with rides-1 gone; want rides-2", sid, got)
			case pool != "rides" && got != before:
				t.Fatalf("session %s of %s moved from %s to %s when a backend of rides went", sid, pool, before, got)
			}
		}
	}

	// The routes are part of the mesh's configuration: a node without
	// them would send /ws elsewhere, so it is not ready and serves 503.
	_, s := startNode(t, "pn-noroutes", "--join", seed, "--drain-delay", "0")
	waitFor(t, 20*time.Second, "the node without routes unready, refusing traffic", func() (bool, string) {
		code, body := httpGet("http://" + s.AdminAddr + "/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "differs from the mesh") {
			return false, fmt.Sprintf("readyz %d %s", code, body)
		}
		code, body = httpGet("http://" + s.ProxyAddr + "/ws?session_id=alice")
		return code == http.StatusServiceUnavailable, fmt.Sprintf("proxy %d %s", code, body)
	})
}

// query keys a session of pool by sid: chat by its room (the session ID
// given beside it must not count), the others by the session ID.
func query(pool, sid string) string {
	if pool == "chat" {
		return "room=" + url.QueryEscape(sid) + "&session_id=ignored"
	}
	return "session_id=" + url.QueryEscape(sid)
}

func routeIn(t *testing.T, admin, key, pool string) string {
	t.Helper()
	var r struct{ Backend, Pool string }
	getJSON(t, "http://"+admin+"/v1/route?key="+url.QueryEscape(key)+"&pool="+pool, &r)
	if r.Pool != pool {
		t.Fatalf("/v1/route?pool=%s answered for pool %q", pool, r.Pool)
	}
	return r.Backend
}

// whoamiAt opens a WebSocket on path through proxy and asks which backend
// answers.
func whoamiAt(t *testing.T, proxy, path, query string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+proxy+path+"?"+query, nil)
	if err != nil {
		t.Fatalf("dial %s%s: %v", proxy, path, err)
	}
	defer c.CloseNow()
	id := ask(ctx, t, c)
	c.Close(websocket.StatusNormalClosure, "")
	return id
}
