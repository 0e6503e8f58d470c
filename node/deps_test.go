package node

import (
	"os/exec"
	"strings"
	"testing"
)

// node never reaches up into the command or its flag parsing.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "flag" || strings.HasPrefix(dep, "github.com/meshlb/meshlb/cmd") || dep == "github.com/meshlb/meshlb/config" {
			t.Errorf("node depends on %s", dep)
		}
	}
}
