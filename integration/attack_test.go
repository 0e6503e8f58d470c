package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// attackReport is the part of `attack --json` this test reads.
type attackReport struct {
	Classes []struct {
		Name     string         `json:"name"`
		Tries    int            `json:"tries"`
		Outcomes map[string]int `json:"outcomes"`
		Skipped  string         `json:"skipped"`
		Err      string         `json:"error"`
		Checks   []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	} `json:"classes"`
}

// The attack campaign (make attack) with 3 tries per class on a 2-node
// mesh: every class runs, and after each the node is alive with its RSS,
// threads and fds back near baseline. The legit p99 and the expected
// answers are logged, not checked: at 3 tries on a shared machine the
// p99 is noise, and the expected answers wait on the hardening fixes
// (make attack checks them with --strict).
func TestAttackCampaignSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a mesh and attacks it")
	}
	if runtime.GOOS != "linux" {
		t.Skip("lab/attack reads /proc")
	}
	tool := filepath.Join(filepath.Dir(binary), "attack")
	build := exec.Command("go", "build", "-o", tool, "../lab/attack")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build lab/attack: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, "--meshlb", binary, "--json", "--tries", "3", "--nodes", "2",
		"--baseline", "500ms", "--hold", "500ms", "--handshake-timeout", "1s", "--settle", "10s", "--legit-conns", "4",
		"--logs", t.TempDir())
	cmd.Env = filterEnv(os.Environ())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := cmd.ProcessState.ExitCode()
	if err != nil && code != 1 {
		t.Fatalf("attack: %v (exit %d)\n%s", err, code, errb.String())
	}
	var r attackReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("attack exit %d, stdout not a report: %v\n%s", code, err, errb.String())
	}
	if len(r.Classes) < 18 {
		t.Fatalf("%d classes ran; want all 18\n%s", len(r.Classes), errb.String())
	}
	for _, c := range r.Classes {
		if c.Skipped != "" {
			t.Logf("%s skipped: %s", c.Name, c.Skipped)
			continue
		}
		if c.Err != "" {
			t.Errorf("%s: %s", c.Name, c.Err)
		}
		for _, ch := range c.Checks {
			switch {
			case ch.OK:
			case ch.Name == "legit-p99" || ch.Name == "expected":
				t.Logf("%s: %s (not checked here): %s", c.Name, ch.Name, ch.Detail)
			default:
				t.Errorf("%s: %s: %s", c.Name, ch.Name, ch.Detail)
			}
		}
		t.Logf("%s: %d tries, %v", c.Name, c.Tries, c.Outcomes)
	}
}
