package gossip

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// TestCatalogValueWeights: a record written before weights existed decodes
// with weight 1, weight 1 encodes as it always did, others round-trip, and
// an out-of-range weight is refused at validation.
func TestCatalogValueWeights(t *testing.T) {
	old := append([]byte{byte(StateActive)}, "10.0.0.1:80"...)
	if s, addr, w, _, err := decodeCatalogValue(old); err != nil || s != StateActive || addr != "10.0.0.1:80" || w != 1 {
		t.Fatalf("old value: %v %q %d %v", s, addr, w, err)
	}
	if v := catalogValue(StateActive, "10.0.0.1:80", 1, DefaultPool); !bytes.Equal(v, old) {
		t.Fatalf("weight 1 encodes as %q, want the old %q", v, old)
	}
	for _, w := range []int{2, 3, 57, MaxWeight} {
		s, addr, got, _, err := decodeCatalogValue(catalogValue(StateDraining, "[::1]:9000", w, ""))
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

// TestCatalogValuePools: the default pool writes what nodes wrote before
// pools, another pool round-trips with and without a weight, and every
// other encoding of a pool (the default spelled out, a bad name, a field
// out of order or twice) is refused, so one record has one encoding.
func TestCatalogValuePools(t *testing.T) {
	old := append([]byte{byte(StateActive)}, "10.0.0.1:80"...)
	if v := catalogValue(StateActive, "10.0.0.1:80", 1, DefaultPool); !bytes.Equal(v, old) {
		t.Fatalf("default pool encodes as %q, want the old %q", v, old)
	}
	for _, w := range []int{1, 2, MaxWeight} {
		for _, pool := range []string{DefaultPool, "rides", "a", "chat-2_b", strings.Repeat("z", MaxPoolLen)} {
			s, addr, gw, gp, err := decodeCatalogValue(catalogValue(StateDraining, "h:1", w, pool))
			if err != nil || s != StateDraining || addr != "h:1" || gw != w || gp != pool {
				t.Fatalf("weight %d pool %q: %v %q %d %q %v", w, pool, s, addr, gw, gp, err)
			}
		}
	}
	base := append([]byte{byte(StateActive)}, "h:1"...)
	spec := catalogSpec(validateID)
	for _, bad := range [][]byte{
		append(append(slices.Clone(base), 0, 'p'), DefaultPool...),
		append(append(slices.Clone(base), 0, 'p'), "Rides"...),
		append(append(slices.Clone(base), 0, 'p'), strings.Repeat("z", MaxPoolLen+1)...),
		append(append(slices.Clone(base), 0, 'p'), "-x"...),
		append(append(append(slices.Clone(base), 0, 'p'), "rides"...), 0, 5),               // weight after the pool
		append(append(append(append(slices.Clone(base), 0, 'p'), "a"...), 0, 'p'), "b"...), // two pools
		append(slices.Clone(base), 0, 5, 0, 6),                                             // two weights
		append(slices.Clone(base), 0, 'p'),                                                 // an empty pool
	} {
		if err := spec.Validate("b", bad); err == nil {
			t.Errorf("value %q accepted", bad)
		}
	}
	for _, bad := range []string{"", "Default", "a b", "x/y", "é", strings.Repeat("a", MaxPoolLen+1), "_a"} {
		if ValidatePool(bad) == nil {
			t.Errorf("pool %q accepted", bad)
		}
	}
}

// TestUpsertBackendKeepsPool: the pool travels with the record, a drain
// keeps it, and moving a backend to another pool is a new version.
func TestUpsertBackendKeepsPool(t *testing.T) {
	c := newTestCluster(t, 1, nil)[0]
	if _, err := c.UpsertBackend("b1", "127.0.0.1:9000", 1, "Bad"); err == nil {
		t.Fatal("bad pool accepted")
	}
	r, err := c.UpsertBackend("b1", "127.0.0.1:9000", 3, "rides")
	if err != nil || r.Pool != "rides" || r.Weight != 3 {
		t.Fatalf("upsert: %+v %v", r, err)
	}
	if r, err = c.SetState("b1", StateDraining); err != nil || r.Pool != "rides" || r.Weight != 3 {
		t.Fatalf("drain: %+v %v", r, err)
	}
	v := r.Version
	if r, err = c.UpsertBackend("b1", "127.0.0.1:9000", 3, ""); err != nil || r.Pool != DefaultPool || r.Version == v {
		t.Fatalf("move to the default pool: %+v %v", r, err)
	}
}

// FuzzDecodeCatalogValue: whatever decodes re-encodes to the same bytes
// (one encoding per record, so digests agree) and never panics.
func FuzzDecodeCatalogValue(f *testing.F) {
	f.Add(catalogValue(StateActive, "10.0.0.1:80", 1, ""))
	f.Add(catalogValue(StateDraining, "[::1]:9000", 7, "rides"))
	f.Add(catalogValue(StateActive, "h:1", 1, "chat"))
	f.Fuzz(func(t *testing.T, v []byte) {
		s, addr, w, pool, err := decodeCatalogValue(v)
		if err != nil {
			return
		}
		if got := catalogValue(s, addr, w, pool); !bytes.Equal(got, v) {
			t.Fatalf("re-encoding %v %q %d %q = %q; want %q", s, addr, w, pool, got, v)
		}
	})
}
