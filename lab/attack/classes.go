//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// class is one kind of attack. run sends about the lab's --tries of it to
// n0 and counts each try's outcome in t; it returns errSkip when it can't
// run here.
type class struct {
	name string
	what string
	// expected is the answer the hardening issue asks for, if it names
	// one; tries that got it are counted, and --strict fails the class
	// when any did not.
	expected string
	// maxThreads adds the check that n0's peak threads stayed at most
	// GOMAXPROCS + 16 while the class held its sessions.
	maxThreads bool
	// heldKiB is the memory the node may hold per try while the class
	// holds its tries open, on top of the 64 MB every class gets: a
	// stalled session keeps one read buffer (16 KiB) per direction that
	// its peer does not drain, by design (the bound on it).
	heldKiB int64
	run     func(ctx context.Context, l *lab, t *tally) error
}

var classes = []class{
	{name: "stall", what: "WebSockets stalled both ways: the client and the backend stop reading (--stall-sessions)", maxThreads: true, heldKiB: 40, run: stall},
	{name: "bad-accept", what: "backend 101 without, or with a wrong, Sec-WebSocket-Accept", expected: "502", run: badAccept},
	{name: "bad-upgrade", what: "client upgrades: no key, 3-char key, two keys, version 8, HTTP/1.0", expected: "400 or 426, not forwarded", run: badUpgrade},
	{name: "admin-port", what: "a backend whose address is the node's admin port, and the admin API through the proxy", expected: "400 from the admin API", run: adminPort},
	{name: "bad-ids", what: "backend IDs: .., / ? #, right-to-left override, zero-width space, lone surrogate, invalid UTF-8", expected: "400", run: badIDs},
	{name: "cl-te", what: "both Content-Length and Transfer-Encoding, a request smuggled behind", expected: "400 and close", run: clTE},
	{name: "h2-preface", what: "PRI * HTTP/2.0 on the HTTP/1.1 listener", expected: "4xx/5xx or close, not forwarded", run: h2Preface},
	{name: "no-read-64mb", what: "HTTP clients that never read a 64 MB response", run: noRead64MB},
	{name: "slowloris", what: "request headers one byte every 200 ms, never finished", expected: "closed by the node (408) after --handshake-timeout", run: slowloris},
	{name: "slow-body", what: "a 100 KB request body trickled 10 bytes every 200 ms", run: slowBody},
	{name: "big-headers", what: "one 64 KB header; 2,000 headers over the 32 KB limit", expected: "431", run: bigHeaders},
	{name: "smuggling", what: "framing variants: TE obfuscations, duplicate and odd Content-Length, bare LF, chunk-size overflow", expected: "4xx/5xx, nothing smuggled", run: smuggling},
	{name: "ws-frames", what: "frames declaring 1 TB, unmasked client frames, a 16 MB frame", run: wsFrames},
	{name: "half-close", what: "a WebSocket and an HTTP request, then FIN from the client", run: halfClose},
	{name: "fd-exhaustion", what: "the node's RLIMIT_NOFILE lowered (prlimit) and its fds used up by idle connections", expected: "a new WebSocket meanwhile answered (503), serves again once they close", run: fdExhaustion},
	{name: "connect-flood", what: "10 x --tries connects, closed at once or after one byte", run: connectFlood},
	{name: "gossip", what: "random UDP and TCP bytes to the gossip port; replays of captured (encrypted) packets", expected: "mesh intact", run: gossipGarbage},
	{name: "admin-abuse", what: "concurrent adds and removes, 64 MB bodies, bad JSON", expected: "4xx for bad input, no 5xx", run: adminAbuse},
}

// answer is what a raw HTTP exchange got back.
type answer struct {
	status    int  // of the first response; 0 if none
	responses int  // status lines seen (2 means a second request was answered)
	closed    bool // the node closed the connection before the wait ended
	err       error
	raw       []byte // what the node sent, for exchangeRaw's callers
}

func (a answer) String() string {
	s := "no answer"
	if a.status != 0 {
		s = strconv.Itoa(a.status)
	}
	if a.responses > 1 {
		s += fmt.Sprintf(" (+%d more responses)", a.responses-1)
	}
	switch {
	case a.closed:
		s += ", closed"
	case a.err != nil && errLabel(a.err) != "timeout":
		s += ", " + errLabel(a.err)
	default:
		s += ", open"
	}
	return s
}

// exchange writes req to addr from src(k) and reads until the peer closes
// or wait passes.
func exchange(ctx context.Context, addr string, k int, req []byte, wait time.Duration) answer {
	a := exchangeRaw(ctx, addr, k, req, wait)
	a.raw = nil
	return a
}

// exchangeRaw is exchange keeping what the node sent (up to 1 MiB).
func exchangeRaw(ctx context.Context, addr string, k int, req []byte, wait time.Duration) answer {
	c, err := dial(ctx, addr, k, 0)
	if err != nil {
		return answer{err: err}
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(req); err != nil {
		return answer{err: err}
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, io.LimitReader(c, 1<<20))
	a := parseAnswer(buf.Bytes())
	a.raw = buf.Bytes()
	if err == nil {
		a.closed = true
	} else {
		a.err = err
		a.closed = errLabel(err) == "reset"
	}
	return a
}

func parseAnswer(b []byte) answer {
	var a answer
	if bytes.HasPrefix(b, []byte("HTTP/1.")) && len(b) >= 12 {
		a.status, _ = strconv.Atoi(string(b[9:12]))
	}
	a.responses = bytes.Count(b, []byte("HTTP/1.1 ")) + bytes.Count(b, []byte("HTTP/1.0 "))
	return a
}

func wsKey() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// stall opens --stall-sessions WebSockets through n0 to the hostile
// backend's /h/stall. The client's receive buffer is 4 KiB and it never
// reads; the backend writes up to 256 KiB toward it and never reads
// either; the client writes up to 256 KiB. Each session is then stalled in
// both directions at the node. They are held for --hold, then closed.
func stall(ctx context.Context, l *lab, t *tally) error {
	n := l.o.stallSessions
	conns := make([]net.Conn, n)
	u := "ws://" + l.nodes[0].proxy + "/h/stall?session_id=" + l.hKey
	chunk := ws.MustCompileFrame(ws.MaskFrameWith(ws.NewBinaryFrame(make([]byte, 16<<10)), ws.NewMask()))
	parallel(ctx, n, 64, func(i int) {
		c, _, err := dialWS(ctx, u, i, 4096)
		if err != nil {
			t.add("open: "+errLabel(err), false)
			return
		}
		conns[i] = c
		sent := 0
		for sent < stallBytes {
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			w, err := c.Write(chunk)
			sent += w
			if err != nil {
				break
			}
		}
		// Either way neither peer reads: the node holds what it took.
		if sent >= stallBytes {
			t.add("open; the node took the client's 256 KiB; neither peer reads", true)
		} else {
			t.add("open; the client's write blocked; neither peer reads", true)
		}
	})
	t.note("hostile backend connections held", l.hostile.heldCount())
	// Read once all are open: at 10,000 sessions the 200 ms sampler,
	// listing 20,000 fds on a busy machine, can miss the peak.
	open := l.nodes[0].usage()
	t.note(fmt.Sprintf("n0 with every session open: %d threads, %d fds, %.0f MB RSS, %d goroutines", open.Threads, open.FDs, mb(open.RSSKiB), open.Goroutines), 1)
	ramp := l.legit.take()
	rampControl := l.control.take()
	sleepCtx(ctx, l.o.hold)
	held, heldControl := l.legit.take(), l.control.take()
	t.ramp, t.held = &ramp, &held
	t.rampControl, t.heldControl = &rampControl, &heldControl
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	l.hostile.closeAll()
	return nil
}

func badAccept(ctx context.Context, l *lab, t *tally) error {
	modes := []string{"noaccept", "badaccept"}
	parallel(ctx, l.o.tries, 32, func(i int) {
		m := modes[i%2]
		key := wsKey()
		req := fmt.Appendf(nil, "GET /h/%s?session_id=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n\r\n", m, l.hKey, key)
		a := exchangeRaw(ctx, l.nodes[0].proxy, i, req, 500*time.Millisecond)
		// 502, or a 101 that answers our key: once its failures mark the
		// hostile backend down in the node's own view, the node fails the
		// session over to the next candidate, a real backend. Never the
		// hostile 101 itself.
		valid := a.status == 101 && bytes.Contains(a.raw, []byte(": "+acceptFor(key)+"\r\n"))
		label := m + ": " + a.String()
		if valid {
			label += " (another backend's valid 101)"
		}
		t.add(label, a.status == 502 || valid)
	})
	l.hostile.closeAll()
	return nil
}

func badUpgrade(ctx context.Context, l *lab, t *tally) error {
	path := "/h/ok?session_id=" + l.hKey
	base := "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	variants := []struct{ name, req string }{
		{"no key", "GET " + path + " HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\n\r\n"},
		{"3-char key", "GET " + path + " HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: abc\r\n\r\n"},
		{"two keys", "GET " + path + " HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + wsKey() + "\r\nSec-WebSocket-Key: " + wsKey() + "\r\n\r\n"},
		{"version 8", "GET " + path + " HTTP/1.1\r\n" + base + "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: " + wsKey() + "\r\n\r\n"},
		{"HTTP/1.0", "GET " + path + " HTTP/1.0\r\n" + base + "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + wsKey() + "\r\n\r\n"},
	}
	parallel(ctx, l.o.tries, 32, func(i int) {
		v := variants[i%len(variants)]
		a := exchange(ctx, l.nodes[0].proxy, i, []byte(v.req), 500*time.Millisecond)
		t.add(v.name+": "+a.String(), a.status == 400 || a.status == 426)
	})
	l.hostile.closeAll()
	return nil
}

// adminPort asks n0's admin API to add backends whose address is its own
// admin listener, spelled several ways. One the API takes is then reached
// through the proxy: GET /v1/status answered 200 means an outsider can
// call the admin API.
func adminPort(ctx context.Context, l *lab, t *tally) error {
	n0 := l.nodes[0]
	_, port, _ := net.SplitHostPort(n0.admin)
	spellings := []string{n0.admin, "localhost:" + port, "127.1:" + port, "0.0.0.0:" + port, "[::ffff:127.0.0.1]:" + port, "127.0.0.1:0" + port}
	var accepted []string
	var mu sync.Mutex
	parallel(ctx, l.o.tries, 8, func(i int) {
		addr := spellings[i%len(spellings)]
		id := fmt.Sprintf("adminport-%d", i%len(spellings))
		body, _ := json.Marshal(map[string]string{"id": id, "addr": addr})
		code, _, err := admin("POST", n0.admin, "/v1/backends", bytes.NewReader(body))
		if err != nil {
			t.add("add "+addr+": "+errLabel(err), false)
			return
		}
		t.add(fmt.Sprintf("add %s: %d", addr, code), code == 400)
		if code/100 == 2 {
			mu.Lock()
			if !containsStr(accepted, id) {
				accepted = append(accepted, id)
			}
			mu.Unlock()
		}
	})
	if len(accepted) > 0 {
		// Give the ring the first accepted one alone among the extras,
		// then reach it through the proxy.
		for _, id := range accepted[1:] {
			admin("DELETE", n0.admin, "/v1/backends/"+id, nil)
		}
		deadline := time.Now().Add(10 * time.Second)
		for ringBackends(n0.admin) != 3 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		key, err := keyFor(n0.admin, accepted[0])
		if err != nil {
			t.note("admin-port backend never in the ring", 1)
			return nil
		}
		c := http.Client{Timeout: 5 * time.Second}
		for range min(l.o.tries, 100) {
			resp, err := c.Get("http://" + n0.proxy + "/v1/status?session_id=" + key)
			if err != nil {
				t.note("through the proxy: GET /v1/status: "+errLabel(err), 1)
				continue
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			what := ""
			if resp.StatusCode == 200 && bytes.Contains(b, []byte(`"members"`)) {
				what = " (the admin API answered through the proxy)"
			}
			t.note(fmt.Sprintf("through the proxy: GET /v1/status: %d%s", resp.StatusCode, what), 1)
		}
	}
	return nil
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// badIDs adds backends with hostile IDs; one the API takes is removed
// again by its escaped ID (and the count says whether that worked).
func badIDs(ctx context.Context, l *lab, t *tally) error {
	n0 := l.nodes[0]
	ids := []struct{ name, json string }{
		{"..", `".."`}, {"a/b", `"a/b"`}, {"a?b", `"a?b"`}, {"a#b", `"a#b"`},
		{"RLO U+202E", `"ab\u202ecd"`}, {"ZWSP U+200B", `"ab\u200bcd"`},
		{"lone surrogate", `"ab\ud800cd"`}, {"invalid UTF-8", "\"ab\xff\xfecd\""},
		{"empty", `""`}, {"4 KB", `"` + strings.Repeat("x", 4096) + `"`},
	}
	parallel(ctx, l.o.tries, 4, func(i int) {
		v := ids[i%len(ids)]
		body := fmt.Sprintf(`{"id": %s, "addr": %q}`, v.json, l.echoAddr[0])
		code, _, err := admin("POST", n0.admin, "/v1/backends", strings.NewReader(body))
		if err != nil {
			t.add(v.name+": "+errLabel(err), false)
			return
		}
		label := fmt.Sprintf("%s: %d", v.name, code)
		// An empty ID is no bad ID: the API takes the address as the ID.
		want := code == 400
		if v.name == "empty" {
			want = code/100 == 2
		}
		if code/100 == 2 {
			var id string
			json.Unmarshal([]byte(v.json), &id)
			if id == "" {
				id = l.echoAddr[0] // id defaults to addr
			}
			dc, _, _ := admin("DELETE", n0.admin, "/v1/backends/"+url.PathEscape(id), nil)
			label += fmt.Sprintf(", DELETE by escaped id %d", dc)
		}
		t.add(label, want)
	})
	return nil
}

func clTE(ctx context.Context, l *lab, t *tally) error {
	before := l.hostile.smuggled.Load()
	path := "/h/http?session_id=" + l.hKey
	smuggled := "GET /h/smuggled?session_id=" + l.hKey + " HTTP/1.1\r\nHost: x\r\n\r\n"
	variants := []struct{ name, req string }{
		{"CL then TE", "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled},
		{"TE then CL", "POST " + path + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n" + smuggled},
	}
	parallel(ctx, l.o.tries, 32, func(i int) {
		v := variants[i%2]
		a := exchange(ctx, l.nodes[0].proxy, i, []byte(v.req), 500*time.Millisecond)
		t.add(v.name+": "+a.String(), a.status == 400 && a.closed)
	})
	t.note("smuggled requests that reached the backend", int(l.hostile.smuggled.Load()-before))
	return nil
}

func h2Preface(ctx context.Context, l *lab, t *tally) error {
	before := l.hostile.requests.Load()
	parallel(ctx, l.o.tries, 32, func(i int) {
		req := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
		if i%2 == 1 { // with an HTTP/2 SETTINGS frame behind, as a real client sends
			req += "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
		}
		a := exchange(ctx, l.nodes[0].proxy, i, []byte(req), 500*time.Millisecond)
		t.add(a.String(), (a.status >= 400 && a.status < 600) || (a.status == 0 && a.closed))
	})
	t.note("requests that reached the backend", int(l.hostile.requests.Load()-before))
	return nil
}

// noRead64MB asks the hostile backend for 64 MB through n0, 200 at a
// time, reads the head only and holds each connection for --hold/3.
func noRead64MB(ctx context.Context, l *lab, t *tally) error {
	hold := l.o.hold / 3
	parallel(ctx, l.o.tries, 200, func(i int) {
		c, err := dial(ctx, l.nodes[0].proxy, i, 4096)
		if err != nil {
			t.add("dial: "+errLabel(err), false)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(hold + 5*time.Second))
		fmt.Fprintf(c, "GET /h/big?session_id=%s HTTP/1.1\r\nHost: x\r\n\r\n", l.hKey)
		head := make([]byte, 512)
		n, err := io.ReadAtLeast(c, head, 12)
		a := parseAnswer(head[:n])
		if err != nil && a.status == 0 {
			t.add("head: "+errLabel(err), false)
			return
		}
		t.add(fmt.Sprintf("%d, then not read", a.status), true)
		sleepCtx(ctx, hold)
	})
	l.hostile.closeAll()
	return nil
}

// slowloris holds --tries connections that send a request head one byte
// every 200 ms and never finish it; each should be closed by the node at
// --handshake-timeout.
func slowloris(ctx context.Context, l *lab, t *tally) error {
	limit := l.o.handshakeTimeout + 3*time.Second
	head := []byte("GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 1<<12))
	parallel(ctx, l.o.tries, 2000, func(i int) {
		c, err := dial(ctx, l.nodes[0].proxy, i, 0)
		if err != nil {
			t.add("dial: "+errLabel(err), false)
			return
		}
		defer c.Close()
		start := time.Now()
		buf := make([]byte, 512)
		for j := 0; time.Since(start) < limit; j++ {
			if _, err := c.Write(head[j%len(head) : j%len(head)+1]); err != nil {
				t.add(fmt.Sprintf("closed by the node (write %s) after %.0fs", errLabel(err), time.Since(start).Seconds()), true)
				return
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := c.Read(buf)
			if n > 0 {
				a := parseAnswer(buf[:n])
				t.add(fmt.Sprintf("%d after %.0fs", a.status, time.Since(start).Seconds()), a.status == 408)
				return
			}
			var ne net.Error
			if err != nil && !(asNetErr(err, &ne) && ne.Timeout()) {
				t.add(fmt.Sprintf("closed without an answer (%s) after %.0fs", errLabel(err), time.Since(start).Seconds()), true)
				return
			}
		}
		t.add(fmt.Sprintf("still open after %v", limit), false)
	})
	return nil
}

// slowBody sends a complete head with Content-Length 100000 to the echo
// backend, then the body 10 bytes every 200 ms, for --handshake-timeout +
// 3 s.
func slowBody(ctx context.Context, l *lab, t *tally) error {
	limit := l.o.handshakeTimeout + 3*time.Second
	parallel(ctx, l.o.tries, 2000, func(i int) {
		c, err := dial(ctx, l.nodes[0].proxy, i, 0)
		if err != nil {
			t.add("dial: "+errLabel(err), false)
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /slowbody?session_id=%s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", l.echoKey)
		start := time.Now()
		buf := make([]byte, 512)
		for time.Since(start) < limit {
			if _, err := c.Write([]byte("0123456789")); err != nil {
				t.add(fmt.Sprintf("closed (write %s)", errLabel(err)), true)
				return
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := c.Read(buf)
			if n > 0 {
				t.add(fmt.Sprintf("%d after %.0fs", parseAnswer(buf[:n]).status, time.Since(start).Seconds()), true)
				return
			}
			var ne net.Error
			if err != nil && !(asNetErr(err, &ne) && ne.Timeout()) {
				t.add(fmt.Sprintf("closed without an answer (%s) after %.0fs", errLabel(err), time.Since(start).Seconds()), true)
				return
			}
		}
		t.add(fmt.Sprintf("still open after %v", limit), true)
	})
	return nil
}

func bigHeaders(ctx context.Context, l *lab, t *tally) error {
	path := "/h/http?session_id=" + l.hKey
	var many strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&many, "X-Header-Number-%04d: some-value\r\n", i) // 38 bytes each, 76 KB
	}
	variants := []struct{ name, req string }{
		{"one 64 KB header", "GET " + path + " HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("b", 64<<10) + "\r\n\r\n"},
		{"2000 headers", "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + many.String() + "\r\n"},
	}
	parallel(ctx, l.o.tries, 32, func(i int) {
		v := variants[i%2]
		a := exchange(ctx, l.nodes[0].proxy, i, []byte(v.req), time.Second)
		t.add(v.name+": "+a.String(), a.status == 431)
	})
	return nil
}

func smuggling(ctx context.Context, l *lab, t *tally) error {
	before := l.hostile.smuggled.Load()
	p := "/h/http?session_id=" + l.hKey
	s := "GET /h/smuggled?session_id=" + l.hKey + " HTTP/1.1\r\nHost: x\r\n\r\n"
	post := "POST " + p + " HTTP/1.1\r\nHost: x\r\n"
	variants := []struct{ name, req string }{
		{"TE: chunked, identity", post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + s},
		{"TE with space before colon", post + "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + s},
		{"TE: xchunked", post + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + s},
		{"TE obs-fold", post + "Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n" + s},
		{"two TE headers", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + s},
		{"two different CL", post + "Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello" + s},
		{"CL: 5, 40", post + "Content-Length: 5, 40\r\n\r\nhello" + s},
		{"CL: +5", post + "Content-Length: +5\r\n\r\nhello" + s},
		{"CL: -1", post + "Content-Length: -1\r\n\r\n" + s},
		{"TE in HTTP/1.0", "POST " + p + " HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + s},
		{"bare LF chunks", post + "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n" + s},
		{"chunk-size overflow", post + "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nx\r\n0\r\n\r\n" + s},
		{"NUL in header", post + "X-A: a\x00b\r\nContent-Length: 0\r\n\r\n" + s},
	}
	parallel(ctx, l.o.tries, 32, func(i int) {
		v := variants[i%len(variants)]
		a := exchange(ctx, l.nodes[0].proxy, i, []byte(v.req), 500*time.Millisecond)
		t.add(v.name+": "+a.String(), a.status >= 400 && a.responses <= 1)
	})
	t.note("smuggled requests that reached the backend", int(l.hostile.smuggled.Load()-before))
	return nil
}

// wsFrames sends hostile frames on WebSockets through n0 to the echo
// backend and records how each connection ended.
func wsFrames(ctx context.Context, l *lab, t *tally) error {
	u := "ws://" + l.nodes[0].proxy + "/frames?session_id=" + l.echoKey
	junk := make([]byte, 64<<10)
	parallel(ctx, l.o.tries, 32, func(i int) {
		c, br, err := dialWS(ctx, u, i, 0)
		if err != nil {
			t.add("open: "+errLabel(err), false)
			return
		}
		defer c.Close()
		var name string
		var h ws.Header
		switch i % 3 {
		case 0:
			name = "1 TB frame"
			h = ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: 1 << 40}
		case 1:
			name = "unmasked frame"
			h = ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(junk))}
		case 2:
			name = "16 MB frame"
			h = ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: 16 << 20}
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		err = ws.WriteHeader(c, h)
		for sent := 0; err == nil && sent < 16<<20; sent += len(junk) {
			_, err = c.Write(junk)
		}
		var r io.Reader = c
		if br != nil {
			r = io.MultiReader(br, c)
		}
		t.add(name+": "+wsEnd(r, err), true)
	})
	return nil
}

// wsEnd reads server frames until the connection ends and names how.
func wsEnd(r io.Reader, writeErr error) string {
	for {
		h, err := ws.ReadHeader(r)
		if err != nil {
			if writeErr != nil {
				return "write " + errLabel(writeErr) + ", then " + errLabel(err)
			}
			return errLabel(err)
		}
		p := make([]byte, min(h.Length, 1<<20))
		if _, err := io.ReadFull(r, p); err != nil {
			return errLabel(err)
		}
		if h.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(p)
			return fmt.Sprintf("close %d", code)
		}
		io.CopyN(io.Discard, r, h.Length-int64(len(p)))
	}
}

func halfClose(ctx context.Context, l *lab, t *tally) error {
	n0 := l.nodes[0]
	parallel(ctx, l.o.tries, 32, func(i int) {
		if i%2 == 0 {
			c, br, err := dialWS(ctx, "ws://"+n0.proxy+"/half?session_id="+l.echoKey, i, 0)
			if err != nil {
				t.add("ws open: "+errLabel(err), false)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(3 * time.Second))
			wsutil.WriteClientText(c, []byte("hello"))
			c.(*net.TCPConn).CloseWrite()
			var r io.Reader = c
			if br != nil {
				r = io.MultiReader(br, c)
			}
			msg, err := wsutil.ReadServerText(struct {
				io.Reader
				io.Writer
			}{r, c})
			got := "echo"
			if err != nil || string(msg) != "hello" {
				got = "no echo (" + errLabel(err) + ")"
			}
			_, err = io.Copy(io.Discard, r)
			end := "then closed"
			if err != nil {
				end = "then " + errLabel(err)
			}
			t.add("ws: "+got+", "+end, true)
			return
		}
		c, err := dial(ctx, n0.proxy, i, 0)
		if err != nil {
			t.add("http dial: "+errLabel(err), false)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET /half?session_id=%s HTTP/1.1\r\nHost: x\r\n\r\n", l.echoKey)
		c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		a := parseAnswer(b)
		a.closed, a.err = err == nil, err
		t.add("http: "+a.String(), true)
	})
	return nil
}

// fdExhaustion lowers n0's soft RLIMIT_NOFILE to its fds + 64 with
// prlimit, holds --tries idle connections to its proxy, checks that a new
// WebSocket fails or waits rather than the node dying or spinning, then
// closes them, restores the limit and checks that a new WebSocket works.
func fdExhaustion(ctx context.Context, l *lab, t *tally) error {
	bin, err := exec.LookPath("prlimit")
	if err != nil {
		return errSkip{"no prlimit(1) here (util-linux)"}
	}
	n0 := l.nodes[0]
	pid := strconv.Itoa(n0.pid())
	out, err := exec.Command(bin, "--pid", pid, "--nofile", "--raw", "--noheadings", "-o", "SOFT,HARD").Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) != 2 {
		return errSkip{fmt.Sprintf("prlimit --pid %s can't read the limit: %v %q", pid, err, out)}
	}
	soft, hard := f[0], f[1]
	low := procUsage(n0.pid()).FDs + 64
	if err := exec.Command(bin, "--pid", pid, fmt.Sprintf("--nofile=%d:%s", low, hard)).Run(); err != nil {
		return errSkip{fmt.Sprintf("prlimit --pid %s --nofile: %v", pid, err)}
	}
	defer exec.Command(bin, "--pid", pid, "--nofile="+soft+":"+hard).Run()
	conns := make([]net.Conn, l.o.tries)
	parallel(ctx, l.o.tries, 64, func(i int) {
		c, err := dial(ctx, n0.proxy, i, 0)
		if err != nil {
			t.add("idle conn: "+errLabel(err), true)
			return
		}
		conns[i] = c
		t.add("idle conn: connected", true)
	})
	// At once, while the idle connections the node took still hold its
	// descriptors (until --handshake-timeout) and the rest wait in the
	// backlog ahead of this one: a 503 (or a 101, if a descriptor came
	// free), never a wait past 3 s.
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	c, _, err := dialWS(wctx, "ws://"+n0.proxy+"/fd?session_id="+l.echoKey, 1, 0)
	cancel()
	if err == nil {
		c.Close()
	}
	label := errLabel(err)
	t.add("new WebSocket while exhausted: "+label, label == "503" || label == "ok")
	ticks := cpuTicks(n0.pid())
	sleepCtx(ctx, l.o.hold)
	t.note(fmt.Sprintf("node CPU while exhausted: %d%%", (cpuTicks(n0.pid())-ticks)*100/max(1, int64(l.o.hold/(10*time.Millisecond)))), 1)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	exec.Command(bin, "--pid", pid, "--nofile="+soft+":"+hard).Run()
	// Recovered: a new WebSocket echoes within 10 s.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := echoOnce(ctx, "ws://"+n0.proxy+"/fd?session_id="+l.echoKey)
		if err == nil {
			t.add("serves again after the connections closed", true)
			return nil
		}
		if time.Now().After(deadline) {
			t.add("does not serve 10s after the connections closed: "+errLabel(err), false)
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func echoOnce(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, br, err := dialWS(ctx, u, 7, 0)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if err := wsutil.WriteClientText(c, []byte("x")); err != nil {
		return err
	}
	var r io.Reader = c
	if br != nil {
		r = io.MultiReader(br, c)
	}
	_, err = wsutil.ReadServerText(struct {
		io.Reader
		io.Writer
	}{r, c})
	return err
}

func connectFlood(ctx context.Context, l *lab, t *tally) error {
	n := 10 * l.o.tries
	parallel(ctx, n, 256, func(i int) {
		c, err := dial(ctx, l.nodes[0].proxy, i, 0)
		if err != nil {
			t.add("connect: "+errLabel(err), true)
			return
		}
		if i%2 == 1 {
			c.Write([]byte("G"))
		}
		c.Close()
		t.add("connected, closed", true)
	})
	return nil
}

// gossipGarbage sends random datagrams and TCP streams to n0's gossip
// port, some behind a valid-looking message-type byte, and replays
// datagrams captured on lo (as root) between the nodes. With the mesh's
// gossip key they are encrypted: a replay must be dropped, not believed.
func gossipGarbage(ctx context.Context, l *lab, t *tally) error {
	n0 := l.nodes[0]
	var ports []int
	for _, n := range l.nodes {
		_, p, _ := net.SplitHostPort(n.gossip)
		pn, _ := strconv.Atoi(p)
		ports = append(ports, pn)
	}
	captured, capErr := capture(ports, 3*time.Second, 200)
	if capErr != nil {
		t.note("replays skipped: "+capErr.Error(), 1)
	}
	t.note("gossip datagrams captured for replay", len(captured))
	ua, _ := net.ResolveUDPAddr("udp", n0.gossip)
	uc, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		return err
	}
	defer uc.Close()
	for i := range l.o.tries {
		if ctx.Err() != nil {
			break
		}
		b := make([]byte, 1+mrand.IntN(1400))
		rand.Read(b)
		if i%2 == 0 {
			b[0] = byte(i / 2 % 16) // memberlist message types are small numbers
		}
		uc.Write(b)
		if len(captured) > 0 {
			uc.Write(captured[i%len(captured)])
			t.add("udp: garbage + replay sent", true)
		} else {
			t.add("udp: garbage sent", true)
		}
		if i%64 == 0 {
			time.Sleep(time.Millisecond) // don't just fill the socket buffer
		}
	}
	parallel(ctx, l.o.tries, 16, func(i int) {
		c, err := dial(ctx, n0.gossip, i, 0)
		if err != nil {
			t.add("tcp: "+errLabel(err), true)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		b := make([]byte, 1+mrand.IntN(8192))
		rand.Read(b)
		if i%2 == 0 {
			b[0] = byte(i / 2 % 16)
		}
		c.Write(b)
		_, err = io.Copy(io.Discard, c)
		if err == nil {
			t.add("tcp: closed by the node", true)
		} else {
			t.add("tcp: "+errLabel(err), true)
		}
	})
	// The mesh is intact: every node still sees every other.
	time.Sleep(2 * time.Second)
	for _, n := range l.nodes {
		_, body, err := admin("GET", n.admin, "/v1/status", nil)
		var st struct {
			Members []struct {
				State string `json:"state"`
			} `json:"members"`
		}
		json.Unmarshal(body, &st)
		t.add(fmt.Sprintf("%s sees %d members afterwards (err %v)", n.name, len(st.Members), err), len(st.Members) == len(l.nodes))
	}
	return nil
}

func adminAbuse(ctx context.Context, l *lab, t *tally) error {
	n0 := l.nodes[0]
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	bad := []struct{ name, body string }{
		{"truncated JSON", `{"id": "x", "addr": `},
		{"wrong types", `{"id": 1, "addr": ["a"]}`},
		{"100k-deep array", deep},
		{"addr not host:port", `{"id": "abuse-bad", "addr": "not a host"}`},
		{"unknown fields only", `{"foo": "bar"}`},
	}
	parallel(ctx, l.o.tries, 32, func(i int) {
		var code int
		var err error
		var kind string
		expectOK := func(c int) bool { return c > 0 && c < 500 }
		switch {
		case i%50 == 49:
			kind = "64 MB body"
			code, _, err = admin("POST", n0.admin, "/v1/backends", io.LimitReader(zeros{}, 64<<20))
			expectOK = func(c int) bool { return c == 413 || c == 400 }
		case i%4 == 0:
			v := bad[i/4%len(bad)]
			kind = v.name
			code, _, err = admin("POST", n0.admin, "/v1/backends", strings.NewReader(v.body))
			expectOK = func(c int) bool { return c == 400 }
		case i%4 == 1 || i%4 == 2:
			kind = "add"
			body := fmt.Sprintf(`{"id": "abuse-%d", "addr": %q}`, i%16, l.echoAddr[0])
			code, _, err = admin("POST", n0.admin, "/v1/backends", strings.NewReader(body))
		default:
			kind = "remove"
			code, _, err = admin("DELETE", n0.admin, fmt.Sprintf("/v1/backends/abuse-%d", i%16), nil)
		}
		if err != nil {
			t.add(kind+": "+errLabel(err), kind == "64 MB body" && (errLabel(err) == "reset" || errLabel(err) == "broken pipe"))
			return
		}
		t.add(fmt.Sprintf("%s: %d", kind, code), expectOK(code))
	})
	return nil
}
