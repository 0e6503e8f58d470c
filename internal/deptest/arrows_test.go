package deptest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/meshlb/meshlb/"

// arrows is what each package may not depend on (its tests aside), and why.
var arrows = []struct {
	pkg, why string
	banned   []string
	// onlySelf bans every package of this module but the package itself.
	onlySelf bool
}{
	{pkg: "ring", why: "pure: no I/O, no logging, no gossip",
		banned: []string{"net", "net/http", "os/exec", "github.com/rs/zerolog", "github.com/hashicorp/memberlist"}},
	{pkg: "gossip", why: "knows nothing of rings, routing, health or nodes: the arrows point from node to gossip, never back",
		banned: []string{mod + "ring", mod + "router", mod + "node", mod + "health", "github.com/buraksezer/consistent"}},
	{pkg: "health", why: "decides without knowing how state travels: it declares the Mesh it needs and node adapts gossip to it",
		banned: []string{mod + "gossip", mod + "node", mod + "ring", mod + "router", "github.com/hashicorp/memberlist"}},
	{pkg: "router", why: "knows no membership and no hashing internals",
		banned: []string{mod + "gossip", mod + "node", mod + "health", "github.com/hashicorp/memberlist", "github.com/buraksezer/consistent"}},
	{pkg: "node", why: "never reaches up into the command or its flag parsing",
		banned: []string{"flag", mod + "cmd/meshlb", mod + "config"}},
	{pkg: "internal/loadgen", why: "sees a mesh only from outside, as a client and an admin-API reader: sharing code with what it checks, a bug on both sides could cancel out",
		onlySelf: true},
}

func TestArrows(t *testing.T) {
	for _, a := range arrows {
		t.Run(a.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", mod+a.pkg).Output()
			if err != nil {
				t.Skipf("go list -deps: %v", err)
			}
			for _, dep := range strings.Fields(string(out)) {
				if slices.Contains(a.banned, dep) || (a.onlySelf && strings.HasPrefix(dep, mod) && dep != mod+a.pkg) {
					t.Errorf("%s depends on %s; it %s", a.pkg, dep, a.why)
				}
			}
		})
	}
}
