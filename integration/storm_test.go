package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The reconnect storm of make bench (lab/bench/proxybench/storm.go), small
// and meshlb only: 300 sessions over 3 nodes, kill -9 of n0, and every one
// of its 100 clients back on its own backend through the others; then the
// same 100 at once at one node. The figures are logged, not judged: the
// machine is shared.
func TestReconnectStormSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a mesh and kills a node under load")
	}
	if runtime.GOOS != "linux" {
		t.Skip("proxybench reads /proc")
	}
	tool := filepath.Join(filepath.Dir(binary), "proxybench")
	build := exec.Command("go", "build", "-o", tool, "../lab/bench/proxybench")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build lab/bench/proxybench: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, "--meshlb", binary, "--only", "meshlb", "--storm-only", "--storm", "300")
	cmd.Env = filterEnv(os.Environ())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("proxybench: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	t.Logf("\n%s", out.String())
	rows := map[string][]string{}
	for line := range strings.Lines(out.String()) {
		for _, name := range []string{"meshlb mesh, kill -9 n0", "meshlb, one node, burst"} {
			if rest, ok := strings.CutPrefix(line, name); ok {
				rows[name] = strings.Fields(rest)
			}
		}
	}
	for name, f := range rows {
		// clients p50 p99 max all-back CPU CPU/conn moved lost failed...
		if len(f) < 9 {
			t.Fatalf("%s: short row %q", name, f)
		}
		clients, _ := strconv.Atoi(f[0])
		moved, _ := strconv.Atoi(f[7])
		lost, _ := strconv.Atoi(f[8])
		if clients != 100 || moved != 0 || lost != 0 {
			t.Errorf("%s: %d clients, %d moved, %d lost; want 100, 0, 0", name, clients, moved, lost)
		}
	}
	if len(rows) != 2 {
		t.Fatalf("want the mesh and the burst rows, got %v", rows)
	}
}
