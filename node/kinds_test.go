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

// TestACMEKindsBudget: the ACME kinds (8, 9, 10) keep to the 160 KiB of
// the budget they were given, and a full certificate set of the largest
// bundle fits the chunk kind twice per domain (one renewing).
func TestACMEKindsBudget(t *testing.T) {
	total := 0
	var chunk gossip.KindSpec
	for _, k := range acmeKinds() {
		total += k.MaxBytes
		if k.Kind == kindACMEChunk {
			chunk = k
		}
	}
	if total > 160<<10 {
		t.Fatalf("acme kinds take %d bytes; 160 KiB were given", total)
	}
	if !chunk.Secret {
		t.Fatal("certificate chunks carry private keys: the kind must be Secret")
	}
	// A P-256 key and a two-certificate chain, as Let's Encrypt's, is
	// some 3 kB: 7 chunks of some 560 encoded bytes.
	const perSet = 7 * 560
	if need := 2 * perSet * maxACMEDomains; need > chunk.MaxBytes {
		t.Fatalf("two sets for each of %d domains need %d bytes; the chunk kind holds %d", maxACMEDomains, need, chunk.MaxBytes)
	}
}
