package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// mesh is a few meshlb nodes in front of echo backends, as processes.
type mesh struct {
	nodes    []*proc
	proxies  []string
	admins   []string
	gossips  []string
	flags    []string         // every node's flags but --join
	backends map[string]*proc // id → echo process
	addrs    map[string]string
}

// startMesh starts echo backends web-1..web-b and n nodes joined through
// the first, all with extra flags, and waits for one ring.
func startMesh(t *testing.T, n, b int, extra ...string) *mesh {
	t.Helper()
	m := &mesh{backends: map[string]*proc{}, addrs: map[string]string{}}
	var flags []string
	for j := 1; j <= b; j++ {
		id := fmt.Sprintf("web-%d", j)
		p, addr := startEcho(t, id)
		m.backends[id], m.addrs[id] = p, addr
		flags = append(flags, "--backend", id+"="+addr)
	}
	flags = append(flags, "--drain-delay", "0", "--drain-spread", "200ms")
	flags = append(flags, extra...)
	m.flags = flags
	var seed string
	for i := range n {
		args := append([]string(nil), flags...)
		if i > 0 {
			args = append(args, "--join", seed)
		}
		p, s := startNode(t, fmt.Sprintf("n%d", i), args...)
		if i == 0 {
			seed = s.GossipAddr
		}
		m.nodes = append(m.nodes, p)
		m.proxies = append(m.proxies, s.ProxyAddr)
		m.admins = append(m.admins, s.AdminAddr)
		m.gossips = append(m.gossips, s.GossipAddr)
	}
	waitFor(t, 30*time.Second, "one ring", oneRing(m.admins, n, b))
	return m
}

// whoami opens a WebSocket through proxy and asks which backend answers.
func whoami(t *testing.T, proxy, query string, opts *websocket.DialOptions) (string, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+proxy+"/ws?"+query, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", proxy, err)
	}
	defer c.CloseNow()
	id := ask(ctx, t, c)
	c.Close(websocket.StatusNormalClosure, "")
	return id, resp
}

func ask(ctx context.Context, t *testing.T, c *websocket.Conn) string {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte("whoami")); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func route(t *testing.T, admin, key string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/v1/route?key=" + url.QueryEscape(key))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct{ Backend string }
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r.Backend
}

// A session ID reaches the same backend through every node, the one
// /v1/route names; the echo works with subprotocols and permessage-deflate
// negotiated end to end.
func TestSessionSticksThroughEveryNode(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 3, 3)
	for _, sid := range []string{"alice", "bob", "carol", "dave"} {
		want := route(t, m.admins[0], sid)
		for _, p := range m.proxies {
			got, resp := whoami(t, p, "session_id="+sid, &websocket.DialOptions{
				Subprotocols:    []string{"chat.v2"},
				CompressionMode: websocket.CompressionNoContextTakeover,
			})
			if got != want {
				t.Fatalf("session %s through %s reached %s; the ring says %s", sid, p, got, want)
			}
			if resp.Header.Get("Sec-WebSocket-Protocol") != "chat.v2" || !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
				t.Fatalf("negotiation lost on the way: %v", resp.Header)
			}
		}
	}
}

// A backend's refusal of the upgrade reaches the client as it was.
func TestBackendRefusalPassesThrough(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws://"+m.proxies[0]+"/status/401?session_id=x", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Backend") != "web-1" {
		t.Fatalf("dial: %v, %+v; want the backend's own 401", err, resp)
	}
}

// An issued session cookie keeps a client on its backend when it comes
// back from another address through another node.
func TestSessionCookieSticksAcrossAddresses(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 2, 3, "--session-cookie", "sid")
	first, resp := whoami(t, m.proxies[0], "", nil)
	var sid *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "sid" {
			sid = c
		}
	}
	if sid == nil || !sid.HttpOnly || sid.Path != "/" {
		t.Fatalf("no HttpOnly session cookie on the 101: %v", resp.Header["Set-Cookie"])
	}
	for _, src := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		opts := &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}},
			HTTPHeader: http.Header{"Cookie": []string{"sid=" + sid.Value}},
		}
		if got, _ := whoami(t, m.proxies[1], "", opts); got != first {
			t.Fatalf("from %s with the cookie: %s; first visit reached %s", src, got, first)
		}
	}
}

// The owner of a key is down: every node sends the session to the same
// next candidate.
func TestFailoverToTheNextCandidate(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 3, 3)
	owner := route(t, m.admins[0], "erin")
	m.backends[owner].cmd.Process.Kill()
	m.backends[owner].wait(5 * time.Second)
	var served string
	for _, p := range m.proxies {
		got, _ := whoami(t, p, "session_id=erin", nil)
		if got == owner {
			t.Fatalf("reached the dead owner %s", owner)
		}
		if served != "" && got != served {
			t.Fatalf("failover went to %s through one node and %s through another", served, got)
		}
		served = got
	}
}

// SIGTERM: the client gets 1001 and reconnects through another node to the
// same backend; the node exits 0.
func TestDrainClosesAndTheClientComesBack(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+m.proxies[0]+"/ws?session_id=frank", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	before := ask(ctx, t, c)
	m.nodes[0].cmd.Process.Signal(syscall.SIGTERM)
	_, _, err = c.Read(ctx)
	if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
		t.Fatalf("read after SIGTERM: %v (close status %d); want 1001", err, code)
	}
	if code := m.nodes[0].wait(15 * time.Second); code != 0 {
		t.Fatalf("drained node exit code %d; want 0", code)
	}
	if after, _ := whoami(t, m.proxies[1], "session_id=frank", nil); after != before {
		t.Fatalf("after the drain the session reached %s; before, %s", after, before)
	}
}

// The client IP key honours X-Forwarded-For only from a trusted proxy.
func TestClientIPBehindTrustedProxyOnly(t *testing.T) {
	t.Parallel()
	trusting := startMesh(t, 1, 3, "--trusted-proxies", "127.0.0.1/32")
	plain := startMesh(t, 1, 3)
	// Find a client address whose owner differs from 127.0.0.1's, so the
	// test can tell the two keys apart.
	local := route(t, trusting.admins[0], "127.0.0.1")
	client := ""
	for i := 1; i < 200 && client == ""; i++ {
		if a := fmt.Sprintf("203.0.113.%d", i); route(t, trusting.admins[0], a) != local {
			client = a
		}
	}
	get := func(proxy string) string {
		req, _ := http.NewRequest("GET", "http://"+proxy+"/", nil)
		req.Header.Set("X-Forwarded-For", client)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.Header.Get("X-Backend")
	}
	if got, want := get(trusting.proxies[0]), route(t, trusting.admins[0], client); got != want {
		t.Fatalf("behind a trusted proxy: %s; want the owner of %s, %s", got, client, want)
	}
	if got, want := get(plain.proxies[0]), route(t, plain.admins[0], "127.0.0.1"); got != want {
		t.Fatalf("from an untrusted peer: %s; want the owner of the peer's own address, %s", got, want)
	}
}
