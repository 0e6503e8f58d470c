package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// benchReport is the part of `meshlb bench --json` these tests read.
type benchReport struct {
	Sessions         int              `json:"sessions"`
	SessionsAnswered int              `json:"sessions_answered"`
	SessionsMoved    int              `json:"sessions_moved"`
	Reconnects       int              `json:"reconnects"`
	Misroutes        int              `json:"misroutes"`
	MovedSetChanged  int              `json:"moved_set_changed"`
	Moves            []benchMove      `json:"moves"`
	BackendSetKnown  bool             `json:"backend_set_known"`
	BackendSetChange int              `json:"backend_set_changes"`
	ErrorRate        float64          `json:"error_rate"`
	Disconnects      map[string]int   `json:"disconnects"`
	Errors           map[string]int   `json:"errors"`
	Verdict          string           `json:"verdict"`
	Reasons          []string         `json:"reasons"`
	Handshake        map[string]any   `json:"handshake"`
	Backends         map[string]int64 `json:"backends"`
	CloseCodes       map[string]int   `json:"close_codes"`
	Resets           int              `json:"resets"`
}

// benchMove is one session meeting another backend.
type benchMove struct {
	Session string    `json:"session"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	At      time.Time `json:"at"`
	Kind    string    `json:"kind"`
}

// bench runs `meshlb bench --json args...`, calling during (if not nil)
// after delay while it runs, and returns the report and the exit code.
func bench(t *testing.T, delay time.Duration, during func(), args ...string) (benchReport, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"bench", "--json", "--seed", "11"}, args...)...)
	cmd.Env = filterEnv(os.Environ())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if during != nil {
		time.Sleep(delay)
		during()
	}
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r benchReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench exit %d, stdout not a report: %v\n%s\n%s", code, err, out.String(), errb.String())
	}
	t.Logf("bench exit %d: %s", code, strings.Join(strings.Fields(out.String()), " "))
	return r, code
}

// A node killed with SIGKILL under load: its sessions reconnect through
// the others to the same backends, and the verdict is a pass (exit 0).
func TestBenchKillNodeUnderLoad(t *testing.T) {
	m := startMesh(t, 3, 3)
	r, code := bench(t, 3*time.Second, func() {
		m.nodes[1].cmd.Process.Kill()
	}, "--nodes", strings.Join(m.proxies, ","), "--admin", m.admins[0]+","+m.admins[2],
		"--sessions", "60", "--duration", "8s", "--whoami-interval", "250ms",
		"--connect-timeout", "10s", "--request-timeout", "10s")
	if code != 0 || r.Verdict != "pass" {
		t.Fatalf("exit %d, verdict %s %v; want 0 and a pass", code, r.Verdict, r.Reasons)
	}
	if r.SessionsAnswered != 60 || r.SessionsMoved != 0 || r.Misroutes != 0 || !r.BackendSetKnown {
		t.Fatalf("%d answered, %d moved, %d misroutes, set known %v", r.SessionsAnswered, r.SessionsMoved, r.Misroutes, r.BackendSetKnown)
	}
	if r.Reconnects == 0 || r.Disconnects["eof"]+r.Disconnects["reset"] == 0 {
		t.Fatalf("%d reconnects, disconnects %v; want the killed node's sessions back", r.Reconnects, r.Disconnects)
	}
}

// Two unrelated backends posing as nodes, and no admin API: a session whose
// backend dies meets the other one. That is a misroute: exit 1.
func TestBenchMisrouteExitsOne(t *testing.T) {
	t.Parallel()
	a, aAddr := startEcho(t, "a")
	_, bAddr := startEcho(t, "b")
	r, code := bench(t, 2*time.Second, func() {
		a.cmd.Process.Kill()
	}, "--nodes", aAddr+","+bAddr, "--sessions", "10", "--duration", "5s", "--whoami-interval", "200ms")
	if code != 1 || r.Verdict != "fail" || r.Misroutes == 0 {
		t.Fatalf("exit %d, verdict %s, %d misroutes; want exit 1 for misroutes", code, r.Verdict, r.Misroutes)
	}
}
