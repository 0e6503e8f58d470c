package ring

import (
	"os/exec"
	"strings"
	"testing"
)

// goListDeps returns the packages ./ring (not its tests) depends on, the
// way tailscale's deptest keeps the arrows between packages honest.
func goListDeps(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list -deps: %v", err)
	}
	return strings.Fields(string(out))
}
