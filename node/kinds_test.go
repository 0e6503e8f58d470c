package node

import (
	"testing"

	"github.com/meshlb/meshlb/gossip"
)

// TestReplicatedKindsFit: the kinds the node registers have distinct
// numbers, none the catalog's, and fit the budget a full state leaves them
// together; past it gossip.New refuses and no node starts.
func TestReplicatedKindsFit(t *testing.T) {
	seen := map[gossip.Kind]string{gossip.KindBackend: "catalog"}
	total := 0
	for _, k := range replicatedKinds() {
		if other, dup := seen[k.Kind]; dup {
			t.Errorf("kind %d is both %s and %s", k.Kind, other, k.Name)
		}
		seen[k.Kind] = k.Name
		total += k.MaxBytes
		t.Logf("kind %d %-12s %7d bytes", k.Kind, k.Name, k.MaxBytes)
		if k.Kind == kindAffinityKey && (k.MaxBytes > 16<<10 || !k.Secret) {
			t.Errorf("affinity keys: %d bytes, secret %v; their budget is 16 KiB, and they never travel in clear", k.MaxBytes, k.Secret)
		}
	}
	if seen[kindAffinityKey] == "" {
		t.Error("affinity keys (kind 11) not registered")
	}
	if total > gossip.KindsBudget {
		t.Fatalf("the kinds may hold %d bytes together; the budget is %d", total, gossip.KindsBudget)
	}
	t.Logf("%d of %d bytes", total, gossip.KindsBudget)
}
