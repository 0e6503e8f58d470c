package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// startLimitedNode runs `meshlb node` with its open-file limit (soft and
// hard) set to nofile, through the shell's ulimit.
func startLimitedNode(t *testing.T, nofile int, args ...string) (*proc, startedLine) {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to set the open-file limit with")
	}
	argv := append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), binary, "node", "--name", "fd", "--log-format", "json",
		"--gossip-addr", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, args...)
	p := runCmd(t, "fd", exec.Command("sh", argv...))
	select {
	case s := <-p.started:
		return p, s
	case <-p.exited:
		t.Fatalf("node exited at start: %v\n%s", p.err, p.output())
	case <-time.After(20 * time.Second):
		t.Fatalf("node did not start\n%s", p.output())
	}
	return nil, startedLine{}
}

// TestOutOfDescriptorsAnswers503 floods a node whose open-file limit is
// 64 with WebSocket upgrades. With --max-conns auto it derives a limit
// that keeps it clear of the open-file limit and answers the overflow 503
// from the router; with a --max-conns too high for the limit it runs out
// of descriptors, and answers 503 from its reserve descriptor. Either
// way every client gets an answer at once, none waits for a timeout, and
// the admin API still answers.
func TestOutOfDescriptorsAnswers503(t *testing.T) {
	t.Parallel()
	_, backend := startEcho(t, "web-1")
	for _, tc := range []struct {
		label string
		args  []string
		log   string // in the node's log
	}{
		{"auto", nil, `"max_conns":16,"unlimited":false,"auto":true,"fd_limit":64`},
		{"too high", []string{"--max-conns", "1000"}, `"message":"accept failed"`},
	} {
		t.Run(tc.label, func(t *testing.T) {
			p, s := startLimitedNode(t, 64, append([]string{"--backend", "web-1=" + backend}, tc.args...)...)
			waitFor(t, 20*time.Second, "ready", func() (bool, string) {
				res, err := http.Get("http://" + s.AdminAddr + "/readyz")
				if err != nil {
					return false, err.Error()
				}
				res.Body.Close()
				return res.StatusCode == 200, res.Status
			})
			const clients = 100
			counts := map[int]int{}
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			start := time.Now()
			for i := range clients {
				c, err := net.DialTimeout("tcp", s.ProxyAddr, 5*time.Second)
				if err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				conns = append(conns, c) // upgraded ones stay open, holding descriptors
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "GET /ws?session_id=%d HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
					"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", i)
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("client %d got no answer: %v; want 101 or 503\n%s", i, err, p.output())
				}
				if res.StatusCode == http.StatusServiceUnavailable {
					body, _ := io.ReadAll(res.Body)
					if !strings.Contains(string(body), "connections") && !strings.Contains(string(body), "file descriptors") {
						t.Errorf("503 body %q; want the cause", body)
					}
				}
				counts[res.StatusCode]++
			}
			if counts[101] == 0 || counts[503] == 0 || counts[101]+counts[503] != clients {
				t.Fatalf("answers %v; want some 101 and the rest 503", counts)
			}
			t.Logf("%d clients in %v: %v", clients, time.Since(start).Round(time.Millisecond), counts)
			res, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + s.AdminAddr + "/healthz")
			if err != nil {
				t.Fatalf("admin during the flood: %v", err)
			}
			res.Body.Close()
			if !strings.Contains(p.output(), tc.log) {
				t.Errorf("log lacks %s:\n%s", tc.log, p.output())
			}
			if n := strings.Count(p.output(), "\n"); n > 40 {
				t.Errorf("%d log lines; want a few, not one per failed accept:\n%s", n, p.output())
			}
		})
	}
}
