package integration

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	integReadTok  = "integ-read-token-0123456789"
	integWriteTok = "integ-write-token-0123456789"
)

func gossipKey(b byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune('a'+b)), 32)))
}

// adminDo sends one admin request and returns its status and body.
func adminDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if method != "GET" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestAdminTokensEveryEndpoint calls every admin endpoint of a node with
// a token file with no token, a wrong one, a read token and a write
// token, and checks the status of each; the node's log never shows a
// token, and a cross-site change is refused.
func TestAdminTokensEveryEndpoint(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(integReadTok+" read\n"+integWriteTok+" write\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, backend := startEcho(t, "web-1")
	p, s := startNode(t, "a", "--admin-token-file", tokens, "--backend", "web-1="+backend, "--gossip-key", gossipKey(0))
	base := "http://" + s.AdminAddr
	waitFor(t, 20*time.Second, "ready", func() (bool, string) {
		code, b := adminDo(t, "GET", base+"/readyz", "", "")
		return code == 200, b
	})
	newKey := gossipKey(1)
	type want struct{ none, wrong, read, write int }
	open := want{200, 200, 200, 200}
	reader := want{401, 401, 200, 200}
	writer := want{401, 401, 403, 200}
	for _, tc := range []struct {
		method, path, body string
		want               want
	}{
		{"GET", "/healthz", "", open},
		{"GET", "/readyz", "", open},
		{"GET", "/metrics", "", open},
		{"GET", "/v1/status", "", reader},
		{"GET", "/v1/route?key=abc", "", reader},
		{"GET", "/v1/backends", "", reader},
		{"GET", "/v1/no-such-endpoint", "", want{401, 401, 404, 404}},
		{"POST", "/v1/backends", `{"id": "web-9", "addr": "127.0.0.1:9"}`, writer},
		{"POST", "/v1/backends/web-9/drain", "", writer},
		{"DELETE", "/v1/backends/web-9", "", want{401, 401, 403, 200}},
		{"GET", "/v1/keys", "", writer},
		{"POST", "/v1/keys", `{"op": "install", "key": "` + newKey + `"}`, writer},
	} {
		for _, tok := range []struct {
			label, token string
			want         int
		}{
			{"no token", "", tc.want.none},
			{"wrong token", "integ-wrong-token-0123456789", tc.want.wrong},
			{"read token", integReadTok, tc.want.read},
			{"write token", integWriteTok, tc.want.write},
		} {
			code, body := adminDo(t, tc.method, base+tc.path, tok.token, tc.body)
			if code != tok.want {
				t.Errorf("%s %s with %s = %d; want %d (%s)", tc.method, tc.path, tok.label, code, tok.want, strings.TrimSpace(body))
			}
			if code >= 400 && !strings.Contains(body, `"error"`) {
				t.Errorf("%s %s with %s: body %q is not a JSON error", tc.method, tc.path, tok.label, body)
			}
		}
	}

	// Cross-site and rebinding, with a write token even.
	for _, tc := range []struct {
		label  string
		header http.Header
		host   string
		want   int
	}{
		{"text/plain from a page", http.Header{"Content-Type": {"text/plain"}}, "", 415},
		{"foreign origin", http.Header{"Content-Type": {"application/json"}, "Origin": {"https://evil.example"}}, "", 403},
		{"rebinding host", http.Header{"Content-Type": {"application/json"}}, "evil.example", 403},
	} {
		req, _ := http.NewRequest("POST", base+"/v1/backends/web-1/drain", nil)
		req.Header = tc.header
		req.Header.Set("Authorization", "Bearer "+integWriteTok)
		if tc.host != "" {
			req.Host = tc.host
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%s: %d; want %d", tc.label, res.StatusCode, tc.want)
		}
	}

	// The CLI with a token, and without.
	if _, errOut, code := cli(t, "status", "--admin-url", base); code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("status without a token: exit %d, %q; want 1 naming 401", code, errOut)
	}
	if _, errOut, code := cli(t, "status", "--admin-url", base, "--token", integReadTok); code != 0 {
		t.Errorf("status with a read token: exit %d, %s", code, errOut)
	}
	if _, errOut, code := cli(t, "backends", "drain", "web-1", "--admin-url", base, "--token", integReadTok); code != 1 || !strings.Contains(errOut, "403") {
		t.Errorf("drain with a read token: exit %d, %q; want 1 naming 403", code, errOut)
	}

	if _, m := adminDo(t, "GET", base+"/metrics", "", ""); !strings.Contains(m, `meshlb_admin_refused_total{reason="no_token"}`) ||
		!strings.Contains(m, `meshlb_admin_refused_total{reason="read_role"}`) {
		t.Errorf("metrics lack the refusals:\n%s", grepLines(m, "meshlb_admin_refused"))
	}

	log := p.output()
	for _, tok := range []string{integReadTok, integWriteTok, "integ-wrong-token", newKey} {
		if strings.Contains(log, tok) {
			t.Fatalf("the node's log holds a secret (%.10s...)", tok)
		}
	}
	if !strings.Contains(log, `"message":"admin request refused"`) {
		t.Fatal("no refusal was logged")
	}
	if n := strings.Count(log, `"message":"admin request refused"`); n > 20 {
		t.Errorf("%d refusal lines for ~40 refusals in a second or two; want them rate-limited", n)
	}

	// SIGHUP reloads the file and does not stop the node.
	if err := os.WriteFile(tokens, []byte("integ-fresh-token-0123456789 read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new token", func() (bool, string) {
		code, b := adminDo(t, "GET", base+"/v1/status", "integ-fresh-token-0123456789", "")
		return code == 200, b
	})
	if code, _ := adminDo(t, "GET", base+"/v1/status", integReadTok, ""); code != 401 {
		t.Errorf("old token after SIGHUP = %d; want 401", code)
	}
}

// TestAdminPublicWithoutTokensExitsTwo: no token file and an admin address
// beyond loopback is a usage error that names the flags.
func TestAdminPublicWithoutTokensExitsTwo(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		_, errOut, code := cli(t, "node", "--name", "a", "--gossip-addr", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--admin", addr)
		if code != 2 || !strings.Contains(errOut, "--admin-token-file") || !strings.Contains(errOut, "--admin-insecure") {
			t.Errorf("--admin %s: exit %d, %q; want 2 naming --admin-token-file and --admin-insecure", addr, code, errOut)
		}
	}
	p, _ := startNode(t, "b", "--admin", "0.0.0.0:0", "--admin-insecure")
	if !strings.Contains(p.output(), "admin api served beyond loopback without tokens") {
		t.Errorf("--admin-insecure did not say so at start:\n%s", p.output())
	}
}

// keyStep runs `meshlb keys OP KEY` through admin and returns the answer.
func keyStep(t *testing.T, admin, op, key string) (acked, total int, took string) {
	t.Helper()
	out, errOut, code := cli(t, "keys", op, key, "--admin-url", "http://"+admin, "--json")
	if code != 0 {
		t.Fatalf("keys %s through %s: exit %d: %s", op, admin, code, errOut)
	}
	var a struct {
		Complete bool     `json:"complete"`
		Acked    []string `json:"acked"`
		Missing  []string `json:"missing"`
		Duration string   `json:"duration"`
	}
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("keys %s: %v: %s", op, err, out)
	}
	if !a.Complete {
		t.Errorf("keys %s through %s: not acknowledged by %v", op, admin, a.Missing)
	}
	return len(a.Acked), len(a.Acked) + len(a.Missing), a.Duration
}

// TestKeyRotationUnderLoad rotates the gossip key of 5 nodes under 500
// live sessions, each step through another node: every step is
// acknowledged by all 5, no member is suspected or lost, every session is
// still answered; a sixth node that was down meanwhile and comes back with
// only the removed key stays out and says why.
func TestKeyRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := gossipKey(0), gossipKey(1)
	var flags []string
	for j := 1; j <= 3; j++ {
		id := fmt.Sprintf("web-%d", j)
		_, addr := startEcho(t, id)
		flags = append(flags, "--backend", id+"="+addr)
	}
	var nodes []*proc
	var admins, proxies []string
	var seed string
	start := func(i int) (*proc, startedLine) {
		args := append([]string{"--gossip-key", k1, "--keyring-file", filepath.Join(dir, fmt.Sprintf("n%d.keyring", i))}, flags...)
		if seed != "" {
			args = append(args, "--join", seed)
		}
		return startNode(t, fmt.Sprintf("n%d", i), args...)
	}
	for i := range 6 {
		p, s := start(i)
		if i == 0 {
			seed = s.GossipAddr
		}
		nodes = append(nodes, p)
		admins, proxies = append(admins, s.AdminAddr), append(proxies, s.ProxyAddr)
	}
	waitFor(t, 30*time.Second, "one ring of 6", oneRing(admins, 6, 3))
	// n5 goes down before the rotation, holding only k1.
	if err := nodes[5].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	nodes[5].wait(45 * time.Second)
	admins, proxies = admins[:5], proxies[:5]
	waitFor(t, 30*time.Second, "one ring of 5", oneRing(admins, 5, 3))

	var steps []string
	var stepErr error
	var wg sync.WaitGroup
	r, code := bench(t, 4*time.Second, func() {
		wg.Go(func() {
			for i, st := range []struct{ op, key string }{{"install", k2}, {"use", k2}, {"remove", k1}} {
				acked, total, took := keyStep(t, admins[i], st.op, st.key)
				steps = append(steps, fmt.Sprintf("%s through n%d: %d/%d acknowledged in %s", st.op, i, acked, total, took))
				if acked != 5 || total != 5 {
					stepErr = fmt.Errorf("%s: %d/%d acknowledged; want 5/5", st.op, acked, total)
				}
				time.Sleep(time.Second)
			}
		})
	}, "--nodes", strings.Join(proxies, ","), "--admin", admins[0], "--sessions", "500", "--rate", "500",
		"--duration", "16s", "--whoami-interval", "500ms")
	wg.Wait()
	for _, s := range steps {
		t.Log(s)
	}
	if stepErr != nil {
		t.Fatal(stepErr)
	}
	if code != 0 || r.Verdict != "pass" || r.SessionsAnswered != 500 || r.Reconnects != 0 || r.Misroutes != 0 {
		t.Fatalf("bench exit %d, verdict %s %v, %d/500 answered, %d reconnects, %d misroutes; want a pass, 500, 0, 0",
			code, r.Verdict, r.Reasons, r.SessionsAnswered, r.Reconnects, r.Misroutes)
	}
	for i, p := range nodes[:5] {
		for _, bad := range []string{"Suspect", "as failed", "no installed keys could decrypt"} {
			if strings.Contains(p.output(), bad) {
				t.Errorf("n%d logged %q during the rotation", i, bad)
			}
		}
		kr, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d.keyring", i)))
		if err != nil || strings.TrimSpace(string(kr)) != `["`+k2+`"]` {
			t.Errorf("n%d keyring file = %s, %v; want only the new key", i, kr, err)
		}
	}
	if _, errOut, code := cli(t, "keys", "remove", k2, "--admin-url", "http://"+admins[3]); code == 0 || !strings.Contains(errOut, "primary") {
		t.Errorf("remove of the primary: exit %d, %q; want a refusal naming the primary", code, errOut)
	}
	k3 := gossipKey(2)
	if _, errOut, code := cli(t, "keys", "use", k3, "--admin-url", "http://"+admins[4]); code == 0 || !strings.Contains(errOut, "not installed") {
		t.Errorf("use of a key not installed: exit %d, %q; want a refusal", code, errOut)
	}
	out, _, code := cli(t, "keys", "list", "--admin-url", "http://"+admins[4])
	if code != 0 || !strings.Contains(out, k2) || !strings.Contains(out, "5/5") || strings.Contains(out, k1) {
		t.Errorf("keys list: exit %d:\n%s", code, out)
	}

	// n5 comes back with its keyring file, which holds only k1.
	back := run(t, "n5", "node", "--name", "n5", "--log-format", "json", "--gossip-addr", "127.0.0.1:0", "--listen", "127.0.0.1:0",
		"--admin", "127.0.0.1:0", "--gossip-key", k1, "--keyring-file", filepath.Join(dir, "n5.keyring"), "--join", seed)
	waitFor(t, 20*time.Second, "n5 saying why it is out", func() (bool, string) {
		o := back.output()
		return strings.Contains(o, `"message":"join failed"`) && strings.Contains(o, "lacks the current one"), "no join failure yet"
	})
	for _, l := range strings.Split(back.output(), "\n") {
		if strings.Contains(l, `"message":"join failed"`) {
			t.Logf("n5, back with the removed key only: %s", l)
			break
		}
	}
	time.Sleep(2 * time.Second)
	waitFor(t, time.Second, "5 members still", oneRing(admins, 5, 3))
}

// TestMaxConnsPerIP opens 2,000 WebSockets from one address against
// --max-conns-per-ip 100: exactly 100 are accepted, the rest get 429 with
// Retry-After, and a client on another address is served meanwhile.
func TestMaxConnsPerIP(t *testing.T) {
	_, backend := startEcho(t, "web-1")
	p, s := startNode(t, "a", "--backend", "web-1="+backend, "--max-conns-per-ip", "100", "--max-conns", "5000")
	waitFor(t, 20*time.Second, "ready", func() (bool, string) {
		code, b := adminDo(t, "GET", "http://"+s.AdminAddr+"/readyz", "", "")
		return code == 200, b
	})
	upgrade := func(from string, i int) (int, string, net.Conn) {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", s.ProxyAddr)
		if err != nil {
			t.Fatalf("dial from %s: %v", from, err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /ws?session_id=%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", i)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("client %d from %s got no answer: %v", i, from, err)
		}
		res.Body.Close()
		_ = c.SetDeadline(time.Time{})
		return res.StatusCode, res.Header.Get("Retry-After"), c
	}
	counts := map[int]int{}
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 20 {
		wg.Go(func() {
			for i := w; i < 2000; i += 20 {
				code, retry, c := upgrade("127.0.0.1", i)
				mu.Lock()
				counts[code]++
				if code == 429 && retry == "" {
					counts[-1]++
				}
				if code == 101 {
					conns = append(conns, c)
				} else {
					c.Close()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if counts[101] != 100 || counts[429] != 1900 || counts[-1] != 0 {
		t.Fatalf("answers %v; want exactly 100 101s and 1900 429s, each with Retry-After", counts)
	}
	for i := range 5 {
		if code, _, c := upgrade("127.0.0.2", 10_000+i); code != 101 {
			t.Fatalf("another client's upgrade %d = %d; want 101", i, code)
		} else {
			defer c.Close()
		}
	}
	_, metrics := adminDo(t, "GET", "http://"+s.AdminAddr+"/metrics", "", "")
	if !strings.Contains(metrics, `meshlb_limited_total{limit="conns_per_ip"} 1900`) {
		t.Errorf("metrics lack meshlb_limited_total{limit=\"conns_per_ip\"} 1900:\n%s", grepLines(metrics, "meshlb_limited"))
	}
	t.Logf("2000 upgrades from one address in %v: %v; 5 from another all 101", took.Round(time.Millisecond), counts)
	if n := strings.Count(p.output(), "client limit reached"); n > 10 {
		t.Errorf("%d limit warnings; want them rate-limited", n)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestHandshakeRatePerIP: a burst of upgrades from one address against
// --handshake-rate-per-ip 5 with a burst of 5 gets the burst through and
// 429 with Retry-After for the rest; plain requests are not handshakes.
func TestHandshakeRatePerIP(t *testing.T) {
	_, backend := startEcho(t, "web-1")
	_, s := startNode(t, "a", "--backend", "web-1="+backend, "--handshake-rate-per-ip", "5", "--handshake-burst-per-ip", "5")
	waitFor(t, 20*time.Second, "ready", func() (bool, string) {
		code, b := adminDo(t, "GET", "http://"+s.AdminAddr+"/readyz", "", "")
		return code == 200, b
	})
	counts := map[int]int{}
	start := time.Now()
	for i := range 20 {
		c, err := net.DialTimeout("tcp", s.ProxyAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /ws?session_id=%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", i)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode == 429 && res.Header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After")
		}
		counts[res.StatusCode]++
		c.Close()
	}
	// At 5/s, the time the loop took may have refilled a token or two.
	extra := int(time.Since(start).Seconds() * 5)
	if counts[101] < 5 || counts[101] > 5+extra+1 || counts[101]+counts[429] != 20 {
		t.Fatalf("answers %v in %v; want the burst of 5 (+%d refilled) and 429 for the rest", counts, time.Since(start), extra)
	}
	for range 10 {
		res, err := http.Get("http://" + s.ProxyAddr + "/?session_id=x")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == 429 {
			t.Fatal("a plain request counted as a handshake")
		}
	}
}
