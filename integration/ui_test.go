package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// findChromium returns a headless-capable Chromium, or "" when none is
// installed (CI installs Debian's chromium: .ci/run).
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestDashboardInChromium drives headless Chromium (DevTools protocol,
// chromedp) against the dashboard of each node of a 3-node mesh: the
// pages list 3 members and 3 backends; a killed backend shows ejected and
// the ring drawing changes within 5 s on every page; with 300 sessions
// open the per-backend counts on the pages equal the sums of /v1/mesh and
// the sessions the access logs have not yet closed; screenshots go to the
// test's temp dir (and to $MESHLB_UI_SCREENSHOTS when set).
func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a mesh and a browser; skipped with -short")
	}
	chromium := findChromium()
	if chromium == "" {
		t.Skip("no chromium on PATH (apt-get install chromium): the dashboard test needs a real browser")
	}
	dir := t.TempDir()

	// The mesh: 3 echo backends, 3 nodes, each with its own access log;
	// fast health checks so an ejection is quick.
	var flags []string
	backends := map[string]*proc{}
	for j := 1; j <= 3; j++ {
		id := fmt.Sprintf("web-%d", j)
		p, addr := startEcho(t, id)
		backends[id] = p
		flags = append(flags, "--backend", id+"="+addr)
	}
	flags = append(flags, "--drain-delay", "0", "--drain-spread", "0", "--health-interval", "250ms", "--health-timeout", "200ms")
	var admins, proxies, logs []string
	var seed string
	for i := range 3 {
		logPath := filepath.Join(dir, fmt.Sprintf("access-n%d.log", i))
		args := append(append([]string(nil), flags...), "--access-log", logPath)
		if i > 0 {
			args = append(args, "--join", seed)
		}
		_, s := startNode(t, fmt.Sprintf("n%d", i), args...)
		if i == 0 {
			seed = s.GossipAddr
		}
		admins, proxies, logs = append(admins, s.AdminAddr), append(proxies, s.ProxyAddr), append(logs, logPath)
	}
	waitFor(t, 30*time.Second, "one ring", oneRing(admins, 3, 3))

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1366, 768))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	begin := time.Now()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	t.Logf("chromium started in %v", time.Since(begin).Round(time.Millisecond))
	pages := make([]context.Context, len(admins))
	for i, a := range admins {
		ctx, cancel := chromedp.NewContext(bctx)
		defer cancel()
		pages[i] = ctx
		if err := chromedp.Do(ctx, chromedp.Navigate("http://"+a+"/ui/")); err != nil {
			t.Fatalf("open the dashboard of n%d: %v", i, err)
		}
	}

	t.Logf("3 pages open in %v", time.Since(begin).Round(time.Millisecond))
	// Every page lists the members and the backends.
	for i, p := range pages {
		pageWait(t, p, 10*time.Second, fmt.Sprintf("n%d's page lists 3 members and 3 backends", i),
			`(() => { const m = document.querySelectorAll('#members tbody tr').length,
			            b = document.querySelectorAll('#backends tbody tr[data-state="active"]').length;
			          return m === 3 && b === 3 ? "" : m + " members, " + b + " active backends"; })()`)
	}
	ringBefore := make([]string, len(pages))
	for i, p := range pages {
		ringBefore[i] = pageString(t, p, `document.querySelector('#ring').dataset.fingerprint`)
	}
	shot(t, pages[0], dir, "mesh-healthy-1366x768.png", 1366, 768)

	// Kill a backend: its row shows the ejection and the ring drawing
	// changes, on every page, within 5 s.
	victim := "web-2"
	backends[victim].cmd.Process.Kill()
	backends[victim].wait(5 * time.Second)
	killed := time.Now()
	for i, p := range pages {
		left := 5*time.Second - time.Since(killed)
		pageWait(t, p, left, fmt.Sprintf("n%d's page shows %s ejected and a new ring", i, victim), fmt.Sprintf(
			`(() => { const r = document.querySelector('#backends tr[data-backend=%q]'),
			            g = document.querySelector('#ring');
			          if (!r || r.dataset.state !== "unhealthy") return "row state " + (r && r.dataset.state);
			          if (g.dataset.fingerprint === %q) return "ring unchanged";
			          if (g.dataset.members.split(",").includes(%q)) return "ring still has the victim";
			          if (g.querySelectorAll('path[data-owner=%q]').length) return "drawing still has the victim";
			          return ""; })()`, victim, ringBefore[i], victim, victim))
	}
	t.Logf("ejection and new ring on all 3 pages %v after the kill", time.Since(killed).Round(10*time.Millisecond))

	// 300 sessions, spread over the nodes.
	const sessions = 300
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conns := make([]*websocket.Conn, sessions)
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for w := range 10 {
		wg.Go(func() {
			for i := w; i < sessions; i += 10 {
				c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/ws?session_id=ui-%d", proxies[i%3], i), nil)
				if err != nil {
					errs <- err
					return
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("open session: %v", err)
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.CloseNow()
			}
		}
	}()
	// None has ended, so the access logs hold no session line: open =
	// opened - closed = 300.
	if n := countSessionLines(t, logs); n != 0 {
		t.Fatalf("%d session lines before any session ended", n)
	}
	for i, p := range pages {
		var page map[string]int
		deadline := time.Now().Add(15 * time.Second)
		for {
			page = pageCounts(t, p)
			mesh := meshCounts(t, admins[i])
			if sum(page) == sessions && equalCounts(page, mesh) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("n%d: page counts %v, /v1/mesh %v; want both to add up to %d", i, page, mesh, sessions)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if page[victim] != 0 {
			t.Errorf("n%d: %d sessions on the ejected %s", i, page[victim], victim)
		}
		t.Logf("n%d's page: %v sessions by backend, as /v1/mesh", i, page)
	}
	shot(t, pages[0], dir, "mesh-300-sessions-1366x768.png", 1366, 768)
	shot(t, pages[1], dir, "mesh-300-sessions-phone-390.png", 390, 844)

	// Closed, every session has its line.
	for _, c := range conns {
		c.Close(websocket.StatusNormalClosure, "")
	}
	waitFor(t, 10*time.Second, "300 session lines", func() (bool, string) {
		n := countSessionLines(t, logs)
		return n == sessions, fmt.Sprintf("%d session lines", n)
	})
	for i, p := range pages {
		pageWait(t, p, 10*time.Second, fmt.Sprintf("n%d's page back to 0 sessions", i),
			`(() => { const s = [...document.querySelectorAll('#backends .total-sessions')].reduce((a, e) => a + +e.textContent, 0);
			          return s === 0 ? "" : s + " sessions"; })()`)
	}
}

// pageWait evaluates js on the page until it returns "" (it returns why
// not otherwise).
func pageWait(t *testing.T, ctx context.Context, timeout time.Duration, what, js string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := pageString(t, ctx, js)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s: %s", timeout, what, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pageString(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return s
}

// pageCounts reads the sessions column of the backends table.
func pageCounts(t *testing.T, ctx context.Context) map[string]int {
	t.Helper()
	js := `Object.fromEntries([...document.querySelectorAll('#backends tbody tr')].map(r => [r.dataset.backend, +r.querySelector('.total-sessions').textContent]))`
	m, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]int](js))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func meshCounts(t *testing.T, admin string) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/v1/mesh")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Nodes []struct {
			Backends map[string]int `json:"backends"`
		} `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, n := range v.Nodes {
		for id, k := range n.Backends {
			out[id] += k
		}
	}
	return out
}

func sum(m map[string]int) (s int) {
	for _, v := range m {
		s += v
	}
	return s
}

// equalCounts compares two counts by backend, a missing one being 0.
func equalCounts(a, b map[string]int) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

func countSessionLines(t *testing.T, paths []string) int {
	t.Helper()
	n := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n += bytes.Count(b, []byte(`"type":"ws"`))
	}
	return n
}

// shot writes a screenshot of the page at width × height.
func shot(t *testing.T, ctx context.Context, dir, name string, width, height int64) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height), chromedp.Sleep(300*time.Millisecond)); err != nil {
		t.Fatalf("viewport: %v", err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	paths := []string{filepath.Join(dir, name)}
	if d := os.Getenv("MESHLB_UI_SCREENSHOTS"); d != "" {
		paths = append(paths, filepath.Join(d, name))
	}
	for _, p := range paths {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: %s", strings.Join(paths, ", "))
}

// TestDashboardWithTokensInChromium opens the dashboard of a node that
// has an admin token file, in headless Chromium: the page loads without a
// token, asks for one (a prompt) when the API refuses it, shows the mesh
// with the read token it was given, asks again when a drain is refused
// for want of the write role, and drains with the write token; the
// tokens never reach a cookie or the URL.
func TestDashboardWithTokensInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and a browser; skipped with -short")
	}
	chromium := findChromium()
	if chromium == "" {
		t.Skip("no chromium on PATH (apt-get install chromium): the dashboard test needs a real browser")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(integReadTok+" read\n"+integWriteTok+" write\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, b1 := startEcho(t, "web-1")
	_, b2 := startEcho(t, "web-2")
	_, s := startNode(t, "n0", "--admin-token-file", tokens, "--backend", "web-1="+b1, "--backend", "web-2="+b2)
	base := "http://" + s.AdminAddr

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Headless,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1366, 768))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()

	// The operator answers each prompt with the next token: read first,
	// write when a button is refused.
	answers := make(chan string, 2)
	answers <- integReadTok
	answers <- integWriteTok
	var mu sync.Mutex
	var prompts []string
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			var text string
			select {
			case text = <-answers:
			default: // a third prompt: dismissed, and the test sees it below
			}
			mu.Lock()
			prompts = append(prompts, ev.Message)
			mu.Unlock()
			go func() {
				_, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: text != "", PromptText: text})
				if err != nil && ctx.Err() == nil {
					t.Errorf("answer the prompt: %v", err)
				}
			}()
		}
	}()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	pageWait(t, ctx, 15*time.Second, "the page shows the mesh with the read token",
		`(() => { const m = document.querySelectorAll('#members tbody tr').length,
		            b = document.querySelectorAll('#backends tbody tr[data-state="active"]').length;
		          return m === 1 && b === 2 ? "" : m + " members, " + b + " active backends"; })()`)
	mu.Lock()
	if len(prompts) != 1 {
		t.Fatalf("prompts before the mesh showed: %q; want one asking for a read token", prompts)
	}
	mu.Unlock()

	// Drain web-1 from its button: refused for the read token, asked
	// again, done with the write token.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#backends tr[data-backend="web-1"] button`))); err != nil {
		t.Fatalf("click drain: %v", err)
	}
	pageWait(t, ctx, 15*time.Second, "web-1 shows draining",
		`(() => { const r = document.querySelector('#backends tr[data-backend="web-1"]');
		          return r && r.dataset.state === "draining" ? "" : "row state " + (r && r.dataset.state) + "; " + document.querySelector('#action-result').textContent; })()`)
	code, body := adminDo(t, "GET", base+"/v1/backends", integReadTok, "")
	if code != 200 || !strings.Contains(body, `"draining"`) {
		t.Errorf("/v1/backends after the drain button: %d %s", code, body)
	}
	mu.Lock()
	if len(prompts) != 2 || !strings.Contains(prompts[1], "403") {
		t.Errorf("prompts: %q; want a second one naming the refused drain's 403", prompts)
	}
	mu.Unlock()
	leak := pageString(t, ctx, `(() => document.cookie + " " + location.href + " " + document.documentElement.innerHTML.includes(`+strconv.Quote(integWriteTok)+`))()`)
	if strings.Contains(leak, integReadTok) || strings.Contains(leak, integWriteTok) || strings.HasSuffix(leak, "true") {
		t.Errorf("a token shows in the cookie, the URL or the page: %q", leak)
	}
	shot(t, ctx, dir, "tokens-drained-1366x768.png", 1366, 768)
}
