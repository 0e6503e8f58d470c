package integration

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNodeWithOtherRingSettingsRefusesTraffic: a node started with
// --ring-partitions 271 into a mesh of defaults is not ready and answers
// 503 to traffic, naming the configuration; restarted with the mesh's
// settings (same name, same gossip port) it is ready and serves.
func TestNodeWithOtherRingSettingsRefusesTraffic(t *testing.T) {
	t.Parallel()
	_, echo := startEcho(t, "web-1")
	_, s0 := startNode(t, "n0", "--backend", "web-1="+echo)
	_, s1 := startNode(t, "n1", "--join", s0.GossipAddr)
	odd, s2 := startNode(t, "n2", "--join", s0.GossipAddr, "--ring-partitions", "271")
	waitFor(t, 20*time.Second, "n2 unready, refusing traffic", func() (bool, string) {
		code, body := httpGet("http://" + s2.AdminAddr + "/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "differs from the mesh") {
			return false, fmt.Sprintf("readyz %d %s", code, body)
		}
		return true, ""
	})
	if code, body := httpGet("http://" + s2.ProxyAddr + "/?session_id=alice"); code != http.StatusServiceUnavailable || !strings.Contains(body, "configuration") {
		t.Fatalf("n2's proxy answered %d %s; want 503 naming the configuration", code, body)
	}
	waitFor(t, 20*time.Second, "n0 and n1 serving", func() (bool, string) {
		for _, s := range []startedLine{s0, s1} {
			if code, body := httpGet("http://" + s.ProxyAddr + "/?session_id=alice"); code != http.StatusOK {
				return false, fmt.Sprintf("%s answered %d %s", s.ProxyAddr, code, body)
			}
		}
		return true, ""
	})
	if !strings.Contains(odd.output(), "refusing traffic until it agrees") {
		t.Fatalf("n2 did not say why it refuses:\n%s", odd.output())
	}

	if err := odd.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	odd.wait(20 * time.Second)
	_, s2 = startNode(t, "n2", "--join", s0.GossipAddr, "--gossip-addr", s2.GossipAddr)
	waitFor(t, 20*time.Second, "n2 ready with the mesh's settings", func() (bool, string) {
		code, body := httpGet("http://" + s2.AdminAddr + "/readyz")
		return code == http.StatusOK, fmt.Sprintf("readyz %d %s", code, body)
	})
	waitFor(t, 20*time.Second, "restarted n2 serving", func() (bool, string) {
		code, body := httpGet("http://" + s2.ProxyAddr + "/?session_id=alice")
		return code == http.StatusOK, fmt.Sprintf("restarted n2 answered %d %s", code, body)
	})
}
