package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A backend killed with kill -9 leaves every node's ring (the admin API,
// the CLI and the metrics all say unhealthy), and comes back when it is
// restarted on its address. Bounds are generous: TestHealthEjectAndRestore
// in node/ measures the times.
func TestKilledBackendLeavesEveryRing(t *testing.T) {
	t.Parallel()
	m := startMesh(t, 5, 3)
	victim := "web-2"
	m.backends[victim].cmd.Process.Kill()
	m.backends[victim].wait(5 * time.Second)
	start := time.Now()
	waitFor(t, 15*time.Second, "the killed backend out of every ring", oneRing(m.admins, 5, 2))
	t.Logf("killed backend out of 5 rings after %v", time.Since(start).Round(10*time.Millisecond))

	out, errOut, code := cli(t, "backends", "--admin-url", "http://"+m.admins[3])
	if code != 0 {
		t.Fatalf("backends: exit %d: %s", code, errOut)
	}
	var line string
	for l := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(l, victim+" ") {
			line = l
		}
	}
	if !strings.Contains(line, "unhealthy") || !strings.Contains(line, "nodes see it down") {
		t.Fatalf("backends list does not show %s unhealthy:\n%s", victim, out)
	}
	// The ring drops web-2 once a quorum sees it down; n1's own check may
	// fail a moment later (CI under -race), so its local view is polled.
	var body []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := http.Get("http://" + m.admins[1] + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), `meshlb_backend_local_up{backend="web-2"} 0`) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{
		`meshlb_backend_state{backend="web-2",state="unhealthy"} 1`,
		`meshlb_backend_state{backend="web-1",state="active"} 1`,
		`meshlb_health_ejected_backends 1`,
		`meshlb_backend_local_up{backend="web-2"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	p := run(t, victim, "echo", "--id", victim, "--listen", m.addrs[victim])
	select {
	case <-p.started:
	case <-time.After(20 * time.Second):
		t.Fatalf("echo did not restart on %s\n%s", m.addrs[victim], p.output())
	}
	start = time.Now()
	waitFor(t, 15*time.Second, "the restarted backend back in every ring", oneRing(m.admins, 5, 3))
	t.Logf("restarted backend back in 5 rings after %v", time.Since(start).Round(10*time.Millisecond))
}
