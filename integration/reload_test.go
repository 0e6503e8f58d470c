package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// SIGHUP re-reads the --config file: the log level, the static backends
// and the limits change live, a ring setting is named and refused, and the
// node keeps serving: a WebSocket open across the reload still answers,
// and the process does not exit.
func TestSIGHUPAppliesTheChangedConfigFile(t *testing.T) {
	t.Parallel()
	_, addr1 := startEcho(t, "web-1")
	_, addr2 := startEcho(t, "web-2")
	file := filepath.Join(t.TempDir(), "meshlb.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("log-level: info\nmax-conns: 1\nbackend:\n  - web-1=" + addr1 + "\n")
	p, s := startNode(t, "reload", "--config", file)
	waitFor(t, 10*time.Second, "one backend", oneRing([]string{s.AdminAddr}, 1, 1))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+s.ProxyAddr+"/ws?session_id=held", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := ask(ctx, t, c); got != "web-1" {
		t.Fatalf("session reached %q; want web-1", got)
	}
	if _, resp, err := websocket.Dial(ctx, "ws://"+s.ProxyAddr+"/ws?session_id=second", nil); err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("a second WebSocket with max-conns 1: %v %v; want 503", resp, err)
	}

	write("log-level: debug\nmax-conns: 10\nws-ping-interval: 5s\nring-partitions: 271\nbackend:\n  - web-1=" + addr1 + "\n  - web-2=" + addr2 + "\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "two backends after SIGHUP", oneRing([]string{s.AdminAddr}, 1, 2))
	waitFor(t, 5*time.Second, "a log line per change", func() (bool, string) {
		out := p.output()
		for _, want := range []string{
			`"option":"log-level","log_level":"debug"`,
			`"option":"backend","backends":2,`,
			`"backend":"web-2","addr":"` + addr2 + `",`,
			`"level":"warn","option":"ring-partitions",`,
			`"option":"max-conns","value":["10"],"time"`,
			`"option":"ws-ping-interval","value":["5s"],"time"`,
			`"max_conns":10,`,
			`"message":"config change needs a restart; not applied"`,
		} {
			if !strings.Contains(out, want) {
				return false, "no " + want
			}
		}
		return true, ""
	})
	if got := ask(ctx, t, c); got != "web-1" {
		t.Fatalf("session open across the reload answered %q; want web-1", got)
	}
	select {
	case <-p.exited:
		t.Fatalf("node exited on SIGHUP: %v", p.err)
	default:
	}
	c2, _, err := websocket.Dial(ctx, "ws://"+s.ProxyAddr+"/ws?session_id=second", nil)
	if err != nil {
		t.Fatalf("a second WebSocket after max-conns went to 10: %v", err)
	}
	ask(ctx, t, c2)
	c2.Close(websocket.StatusNormalClosure, "")

	// A broken file is refused whole; the node keeps running.
	write("log-level: loud\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the refusal", func() (bool, string) {
		return strings.Contains(p.output(), `"message":"config reload failed; keeping the running config"`), "no refusal line"
	})
	if got := ask(ctx, t, c); got != "web-1" {
		t.Fatalf("session answered %q after a bad reload; want web-1", got)
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// SIGHUP reopens the access log, as logrotate expects: after the file is
// moved away, the next line goes to a new file at the configured path, and
// the moved file keeps what was written before.
func TestSIGHUPReopensTheAccessLog(t *testing.T) {
	t.Parallel()
	_, addr := startEcho(t, "web-1")
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	p, s := startNode(t, "rotate", "--backend", "web-1="+addr, "--access-log", path)
	waitFor(t, 10*time.Second, "one backend", oneRing([]string{s.AdminAddr}, 1, 1))
	logged := func(file, path string) func() (bool, string) {
		return func() (bool, string) {
			b, err := os.ReadFile(file)
			return err == nil && strings.Contains(string(b), `"path":"`+path+`"`) && strings.Contains(string(b), `"pool":"default"`), fmt.Sprintf("%s: %v %q", file, err, b)
		}
	}
	if code, body := httpGet("http://" + s.ProxyAddr + "/before?session_id=a"); code != 200 {
		t.Fatalf("GET: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the first line", logged(path, "/before"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the new file", func() (bool, string) {
		_, err := os.Stat(path)
		return err == nil, fmt.Sprint(err)
	})
	if code, body := httpGet("http://" + s.ProxyAddr + "/after?session_id=a"); code != 200 {
		t.Fatalf("GET: %d %s", code, body)
	}
	waitFor(t, 10*time.Second, "the second line in the new file", logged(path, "/after"))
	old, _ := os.ReadFile(path + ".1")
	if !strings.Contains(string(old), `"path":"/before"`) || strings.Contains(string(old), `"path":"/after"`) {
		t.Fatalf("the moved file holds %q", old)
	}
}

// SIGHUP applies changed routes: a path that went to the default pool goes
// to the pool the new route names, the config fingerprint follows, and a
// route the node refuses leaves the running ones.
func TestSIGHUPAppliesRoutes(t *testing.T) {
	t.Parallel()
	_, web := startEcho(t, "web-1")
	_, rides := startEcho(t, "rides-1")
	file := filepath.Join(t.TempDir(), "meshlb.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	backends := "backend:\n  - web-1=" + web + "\n  - rides-1=" + rides + ",pool=rides\n"
	write(backends)
	p, s := startNode(t, "reroute", "--config", file)
	waitFor(t, 10*time.Second, "two backends", oneRing([]string{s.AdminAddr}, 1, 2))
	if got := whoamiAt(t, s.ProxyAddr, "/ws", "session_id=a"); got != "web-1" {
		t.Fatalf("/ws without routes reached %s; want web-1 of the default pool", got)
	}
	fpOf := func() string {
		var st struct {
			ConfigFingerprint string `json:"config_fingerprint"`
		}
		getJSON(t, "http://"+s.AdminAddr+"/v1/status", &st)
		return st.ConfigFingerprint
	}
	before := fpOf()
	write(backends + "route:\n  - path=/ws,pool=rides\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "/ws to the rides pool", func() (bool, string) {
		got := whoamiAt(t, s.ProxyAddr, "/ws", "session_id=a")
		return got == "rides-1", "reached " + got
	})
	if fpOf() == before || !strings.Contains(p.output(), `"option":"route","value":["path=/ws,pool=rides"]`) {
		t.Fatalf("fingerprint %s (was %s), or no applied line:\n%s", fpOf(), before, p.output())
	}
	write(backends + "route:\n  - path=/ws,pool=Rides\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the refusal", func() (bool, string) {
		return strings.Contains(p.output(), `"message":"config reload failed; keeping the running config"`), "no refusal line"
	})
	if got := whoamiAt(t, s.ProxyAddr, "/ws", "session_id=a"); got != "rides-1" {
		t.Fatalf("after a refused route, /ws reached %s; want rides-1 still", got)
	}
}
