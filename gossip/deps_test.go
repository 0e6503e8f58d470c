package gossip

import (
	"os/exec"
	"strings"
	"testing"
)

// gossip knows nothing of rings, routing, health or nodes: the arrows point from
// node to gossip, never back.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/meshlb/meshlb/ring", "github.com/meshlb/meshlb/router", "github.com/meshlb/meshlb/node", "github.com/meshlb/meshlb/health", "github.com/buraksezer/consistent"} {
			if dep == banned {
				t.Errorf("gossip depends on %s", dep)
			}
		}
	}
}
