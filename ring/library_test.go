package ring

import (
	"fmt"
	"math"
	"testing"

	"github.com/buraksezer/consistent"
)

// libraryPanics calls the library the way Build does, under recover, and
// reports whether it panicked. Only tests may do this: Build validates up
// front instead.
func libraryPanics(cfg Config, ids []string) (panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	var lib []consistent.Member // nil for no members, as Build would pass
	for _, id := range ids {
		lib = append(lib, member{name: id + terminator})
	}
	consistent.New(lib, consistent.Config{
		Hasher:            hasher{deriveSeed(cfg.Seed)},
		PartitionCount:    cfg.Partitions,
		ReplicationFactor: cfg.ReplicationFactor,
		Load:              cfg.Load,
	})
	return false
}

// buildPanics calls Build and reports a panic as a failure of the test.
func buildNoPanic(t *testing.T, cfg Config, ids []string) (r *Ring, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Build(%+v, %d ids) panicked: %v", cfg, len(ids), p)
		}
	}()
	return Build(cfg, ids)
}

// TestBuildMatchesLibraryPanics sweeps small grids and checks that Build
// succeeds exactly when the library does not panic, except where Build
// refuses by policy:
//   - ReplicationFactor 1, always: the library's walk visits all vnodes
//     but one, so with one vnode per member it panics whenever the member
//     it skips was the only one with room, which depends on hash values;
//     we would rather refuse a config than accept it for some member sets;
//   - Load below 1 (the library sometimes copes, through ceil rounding);
//   - non-finite Load (+Inf makes the library ignore the bound).
func TestBuildMatchesLibraryPanics(t *testing.T) {
	loads := []float64{0.5, 0.99, 1, 1.01, 1.1, 1.25, 2, math.NaN(), math.Inf(1), math.Inf(-1), -1}
	ids := seqIDs(45)
	maxN := 45
	if testing.Short() {
		maxN = 20
	}
	var agree, policy, rf1Panics, rf1Fine int
	for p := 1; p <= 40; p++ {
		for rf := 1; rf <= 4; rf++ {
			for _, load := range loads {
				cfg := Config{Partitions: p, ReplicationFactor: rf, Load: load, Seed: "grid"}
				for n := 0; n <= maxN; n++ {
					_, err := buildNoPanic(t, cfg, ids[:n])
					panicked := libraryPanics(cfg, ids[:n])
					byPolicy := rf == 1 || load < 1 || math.IsNaN(load) || math.IsInf(load, 0)
					switch {
					case byPolicy:
						if err == nil {
							t.Fatalf("P=%d RF=%d Load=%v N=%d: Build succeeded; want refusal by policy", p, rf, load, n)
						}
						policy++
						roomy := Config{Partitions: p, ReplicationFactor: 2, Load: load}
						if rf == 1 && n > 0 && load >= 1 && !math.IsInf(load, 0) && checkRoom(roomy, n) == nil {
							if panicked {
								rf1Panics++
							} else {
								rf1Fine++
							}
						}
					case (err == nil) == panicked:
						t.Fatalf("P=%d RF=%d Load=%v N=%d: Build error %v, library panicked %v", p, rf, load, n, err, panicked)
					default:
						agree++
					}
				}
			}
		}
	}
	if rf1Panics == 0 && !testing.Short() {
		t.Errorf("RF=1 never panicked with room; the documented reason to refuse it is gone")
	}
	t.Logf("%d configs agree with the library; %d refused by policy; with RF=1 and room for every partition the library still panicked in %d cases and survived %d",
		agree, policy, rf1Panics, rf1Fine)
}

// TestBuildHostileInputs: nothing that arrives by gossip or API makes Build
// panic or spend long.
func TestBuildHostileInputs(t *testing.T) {
	huge := make([]string, 100_000)
	for i := range huge {
		huge[i] = fmt.Sprintf("m%d", i)
	}
	cfgs := []Config{
		{}, {Partitions: math.MaxInt}, {Partitions: math.MinInt}, {ReplicationFactor: math.MaxInt},
		{ReplicationFactor: math.MinInt}, {Load: math.MaxFloat64}, {Load: -math.MaxFloat64},
		{Load: math.SmallestNonzeroFloat64}, {Load: math.NaN()}, {Load: math.Inf(-1)},
		{Partitions: 1, ReplicationFactor: 2, Load: 1},
	}
	lists := [][]string{nil, {}, {""}, {"a", "a"}, {"\xff\xfe"}, {"a\x00"}, huge, huge[:70_000], huge[:2000]}
	for _, cfg := range cfgs {
		for _, ids := range lists {
			r, err := buildNoPanic(t, cfg, ids)
			if err == nil && r.Len() != len(ids) {
				t.Fatalf("Len() = %d; want %d", r.Len(), len(ids))
			}
		}
	}
}
