package health

import (
	"os/exec"
	"strings"
	"testing"
)

// health decides without knowing how state travels: it declares the Mesh
// it needs and the node adapts gossip to it, so the decision rule never
// drags memberlist in.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/meshlb/meshlb/gossip", "github.com/meshlb/meshlb/node", "github.com/meshlb/meshlb/ring", "github.com/meshlb/meshlb/router", "github.com/hashicorp/memberlist"} {
			if dep == banned {
				t.Errorf("health depends on %s", dep)
			}
		}
	}
}
