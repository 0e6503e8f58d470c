package gossip

import (
	"bytes"
	"testing"
)

// TestCatalogValueWeights: a record written before weights existed decodes
// with weight 1, weight 1 encodes as it always did, others round-trip, and
// an out-of-range weight is refused at validation.
func TestCatalogValueWeights(t *testing.T) {
	old := append([]byte{byte(StateActive)}, "10.0.0.1:80"...)
	if s, addr, w, err := decodeCatalogValue(old); err != nil || s != StateActive || addr != "10.0.0.1:80" || w != 1 {
		t.Fatalf("old value: %v %q %d %v", s, addr, w, err)
	}
	if v := catalogValue(StateActive, "10.0.0.1:80", 1); !bytes.Equal(v, old) {
		t.Fatalf("weight 1 encodes as %q, want the old %q", v, old)
	}
	for _, w := range []int{2, 3, 57, MaxWeight} {
		s, addr, got, err := decodeCatalogValue(catalogValue(StateDraining, "[::1]:9000", w))
		if err != nil || s != StateDraining || addr != "[::1]:9000" || got != w {
			t.Fatalf("weight %d: %v %q %d %v", w, s, addr, got, err)
		}
	}
	spec := catalogSpec(validateID)
	for _, bad := range [][]byte{
		append(append([]byte{byte(StateActive)}, "h:1"...), 0, 1),   // 1 must be written as none
		append(append([]byte{byte(StateActive)}, "h:1"...), 0, 101), // above MaxWeight
		append(append([]byte{byte(StateActive)}, "h:1"...), 0, 0),
		append(append([]byte{byte(StateActive)}, "h:1"...), 0),
	} {
		if err := spec.Validate("b", bad); err == nil {
			t.Errorf("value %q accepted", bad)
		}
	}
}

// TestUpsertWeightedKeepsWeight: the weight travels with the record and a
// drain keeps it.
func TestUpsertWeightedKeepsWeight(t *testing.T) {
	cs := newTestCluster(t, 1, nil)
	c := cs[0]
	if _, err := c.UpsertWeighted("b1", "127.0.0.1:9000", 0); err == nil {
		t.Fatal("weight 0 accepted")
	}
	r, err := c.UpsertWeighted("b1", "127.0.0.1:9000", 7)
	if err != nil || r.Weight != 7 {
		t.Fatalf("upsert: %+v %v", r, err)
	}
	if r, err = c.SetState("b1", StateDraining); err != nil || r.Weight != 7 {
		t.Fatalf("drain: %+v %v", r, err)
	}
	if r, err = c.Upsert("b1", "127.0.0.1:9000"); err != nil || r.Weight != 1 || r.State != StateActive {
		t.Fatalf("upsert weight 1: %+v %v", r, err)
	}
}
