package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// affinitySessions is how many sessions TestAffinityCookie keeps, the
// issue's 1,000 (the whole test took 7.4 s on two shared cores).
const affinitySessions = 1000

// wsSession dials a WebSocket through proxy with session ID sid and the
// cookie (if any), and returns the backend that answered and the
// affinity cookie set on the 101, closing the connection.
func wsSession(proxy, sid, cookie string) (backend string, setCookie string, err error) {
	d := ws.Dialer{Timeout: 5 * time.Second}
	if cookie != "" {
		d.Header = ws.HandshakeHeaderHTTP(http.Header{"Cookie": {cookie}})
	}
	d.OnHeader = func(k, v []byte) error {
		switch strings.ToLower(string(k)) {
		case "x-backend":
			backend = string(v)
		case "set-cookie":
			if strings.HasPrefix(string(v), "mlbaff=") {
				setCookie = string(v)
			}
		}
		return nil
	}
	conn, _, _, err := d.Dial(context.Background(), "ws://"+proxy+"/ws?session_id="+sid)
	if err != nil {
		return "", "", err
	}
	conn.Close()
	return backend, setCookie, nil
}

// cookieValue is the name=value part of a Set-Cookie line.
func cookieValue(setCookie string) string { v, _, _ := strings.Cut(setCookie, ";"); return v }

// TestAffinityCookie: sessions on 3 backends through 3 nodes reconnect
// through other nodes after 3 backends are added: with the cookie none
// moves while the ring alone would move about half, and new sessions use
// all 6; an original backend killed moves only its own sessions, once.
func TestAffinityCookie(t *testing.T) {
	t.Parallel()
	key := gossipKey(7)
	var echoes []*proc
	addrs := make([]string, 6)
	for i := range addrs {
		p, a := startEcho(t, fmt.Sprintf("af-%d", i+1))
		echoes, addrs[i] = append(echoes, p), a
	}
	common := []string{"--gossip-key", key, "--affinity-cookie", "mlbaff", "--affinity-max-age", "1h", "--health-interval", "250ms"}
	_, s0 := startNode(t, "an0", append(common, "--backend", "af-1="+addrs[0]+",af-2="+addrs[1]+",af-3="+addrs[2])...)
	admins, proxies := []string{s0.AdminAddr}, []string{s0.ProxyAddr}
	for i := 1; i < 3; i++ {
		_, s := startNode(t, fmt.Sprintf("an%d", i), append(common, "--join", s0.GossipAddr)...)
		admins, proxies = append(admins, s.AdminAddr), append(proxies, s.ProxyAddr)
	}
	waitFor(t, 30*time.Second, "one ring of 3", oneRing(admins, 3, 3))
	waitFor(t, 15*time.Second, "affinity keys on every node", func() (bool, string) {
		for _, p := range proxies {
			if _, c, err := wsSession(p, "probe", ""); err != nil || c == "" {
				return false, fmt.Sprintf("%s: no affinity cookie yet (%v)", p, err)
			}
		}
		return true, ""
	})

	type sess struct{ backend, cookie string }
	sessions := make([]sess, affinitySessions)
	// each runs f(i) for every session, 8 at a time (2 cores).
	each := func(f func(i int) error) {
		t.Helper()
		var mu sync.Mutex
		var firstErr error
		var wg sync.WaitGroup
		work := make(chan int)
		for range 8 {
			wg.Go(func() {
				for i := range work {
					if err := f(i); err != nil {
						mu.Lock()
						firstErr = cmpErr(firstErr, err)
						mu.Unlock()
					}
				}
			})
		}
		for i := range sessions {
			work <- i
		}
		close(work)
		wg.Wait()
		if firstErr != nil {
			t.Fatal(firstErr)
		}
	}
	each(func(i int) error {
		b, c, err := wsSession(proxies[i%3], fmt.Sprintf("s-%d", i), "")
		if err != nil || b == "" || c == "" {
			return fmt.Errorf("session %d: backend %q cookie %q: %v", i, b, c, err)
		}
		sessions[i] = sess{b, cookieValue(c)}
		return nil
	})
	attrs := func() string { _, c, _ := wsSession(proxies[0], "attrs", ""); return c }()
	for _, want := range []string{"Path=/", "Max-Age=3600", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(attrs, want) {
			t.Errorf("Set-Cookie %q lacks %s", attrs, want)
		}
	}

	for i := 3; i < 6; i++ {
		if out, errOut, code := cli(t, "backends", "add", fmt.Sprintf("af-%d=%s", i+1, addrs[i]), "--admin-url", "http://"+admins[i%3]); code != 0 {
			t.Fatalf("backends add: exit %d: %s%s", code, out, errOut)
		}
	}
	waitFor(t, 15*time.Second, "one ring of 6", oneRing(admins, 3, 6))

	var mu sync.Mutex
	movedWith, movedWithout := 0, 0
	each(func(i int) error {
		s := sessions[i]
		b, c, err := wsSession(proxies[(i+1)%3], fmt.Sprintf("s-%d", i), s.cookie)
		if err != nil {
			return err
		}
		nb, _, err := wsSession(proxies[(i+2)%3], fmt.Sprintf("s-%d", i), "")
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if b != s.backend {
			movedWith++
		}
		if nb != s.backend {
			movedWithout++
		}
		if c != "" {
			sessions[i].cookie = cookieValue(c)
		}
		return nil
	})
	t.Logf("after adding 3 backends to 3: %d of %d sessions moved with the cookie, %d (%.1f %%) without",
		movedWith, affinitySessions, movedWithout, 100*float64(movedWithout)/affinitySessions)
	if movedWith != 0 {
		t.Errorf("%d sessions moved despite their cookie", movedWith)
	}
	if f := float64(movedWithout) / affinitySessions; f < 0.35 || f > 0.65 {
		t.Errorf("without the cookie %.2f moved; the ring should move about half", f)
	}
	spread := map[string]int{}
	each(func(i int) error {
		b, _, err := wsSession(proxies[i%3], fmt.Sprintf("new-%d", i), "")
		mu.Lock()
		spread[b]++
		mu.Unlock()
		return err
	})
	t.Logf("new sessions: %v", spread)
	if len(spread) != 6 {
		t.Errorf("new sessions reached %d backends, want 6: %v", len(spread), spread)
	}

	// A forged cookie is ignored (and counted), never an error.
	if b, _, err := wsSession(proxies[1], "forged", "mlbaff=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); err != nil || b == "" {
		t.Fatalf("forged cookie: backend %q, %v", b, err)
	}
	if m := metricsText(t, admins[1]); !strings.Contains(m, `meshlb_affinity_cookies_ignored_total{reason="invalid"} 1`) {
		t.Errorf("forged cookie not counted:\n%s", grepLines(m, "affinity"))
	}
	// /v1/route explains a cookie the same way on every node.
	for _, a := range admins {
		var r struct {
			Backend  string `json:"backend"`
			ChosenBy string `json:"chosen_by"`
		}
		getJSON(t, "http://"+a+"/v1/route?key=s-0&cookie="+url.QueryEscape(strings.TrimPrefix(sessions[0].cookie, "mlbaff=")), &r)
		if r.ChosenBy != "cookie" || r.Backend != sessions[0].backend {
			t.Errorf("%s: /v1/route with s-0's cookie: %+v, want %s by cookie", a, r, sessions[0].backend)
		}
	}

	// Kill af-1: only its sessions move, and once.
	echoes[0].cmd.Process.Kill()
	echoes[0].wait(5 * time.Second)
	waitFor(t, 30*time.Second, "af-1 out of every ring", oneRing(admins, 3, 5))
	onDead, movedOthers := 0, 0
	after := make([]string, affinitySessions)
	each(func(i int) error {
		s := sessions[i]
		b, c, err := wsSession(proxies[(i+2)%3], fmt.Sprintf("s-%d", i), s.cookie)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		after[i] = b
		if s.backend == "af-1" {
			onDead++
			if c == "" {
				return fmt.Errorf("session %d moved off af-1 without a new cookie", i)
			}
			sessions[i].cookie = cookieValue(c)
		} else if b != s.backend {
			movedOthers++
		}
		return nil
	})
	movedTwice := 0
	each(func(i int) error {
		b, _, err := wsSession(proxies[i%3], fmt.Sprintf("s-%d", i), sessions[i].cookie)
		mu.Lock()
		if b != after[i] {
			movedTwice++
		}
		mu.Unlock()
		return err
	})
	t.Logf("af-1 killed: its %d sessions moved; %d others moved; %d moved again on the next reconnect", onDead, movedOthers, movedTwice)
	if onDead == 0 || movedOthers != 0 || movedTwice != 0 {
		t.Errorf("after killing af-1: %d on it, %d others moved, %d moved twice; want >0, 0, 0", onDead, movedOthers, movedTwice)
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func metricsText(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}
