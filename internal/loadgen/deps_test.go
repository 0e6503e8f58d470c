package loadgen

import (
	"os/exec"
	"strings"
	"testing"
)

// loadgen sees a mesh only from outside, as a client and an admin-API
// reader: it must not share code with what it checks, or a bug on both
// sides could cancel out.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/meshlb/meshlb/") && dep != "github.com/meshlb/meshlb/internal/loadgen" {
			t.Errorf("loadgen depends on %s", dep)
		}
	}
}
