package ring

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// v1's table is the library's: the walk on the circle and consistent.New
// give the same owner to every partition, on random configs and sets,
// with bounds that bind (Load near 1, few partitions a member) and that
// don't.
func TestWalkIsTheLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	loads := []float64{1, 1.01, 1.05, 1.1, 1.25, 2, 10}
	runs := 300
	if testing.Short() {
		runs = 60
	}
	binding := 0
	for run := range runs {
		n := 1 + rng.IntN(60)
		rf := 2 + rng.IntN(120)
		cfg := Config{
			Partitions:        n + rng.IntN(3000),
			ReplicationFactor: rf,
			Load:              loads[rng.IntN(len(loads))],
			Seed:              fmt.Sprintf("s%d", rng.IntN(3)),
		}.WithDefaults()
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("10.%d.%d.%d:%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), 8000+rng.IntN(100))
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		if checkRoom(cfg, len(ids)) != nil {
			continue
		}
		seed := deriveSeed(cfg.Seed)
		c, err := circleFor(ids, rf, seed)
		if err != nil {
			t.Fatal(err)
		}
		got, err := walkOwners(c, cfg.Partitions, cfg.Load)
		if err != nil {
			t.Fatalf("run %d (%+v, %d ids): %v", run, cfg, len(ids), err)
		}
		want, err := libraryOwners(ids, hasher{seed}, cfg.Partitions, rf, cfg.Load)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			for p := range got {
				if got[p] != want[p] {
					t.Fatalf("run %d (%+v, %d ids): partition %d: walk gives %s, the library %s", run, cfg, len(ids), p, ids[got[p]], ids[want[p]])
				}
			}
		}
		f := c.firstVnodes(cfg.Partitions)
		if !slices.Equal(f.owners, got) {
			binding++
		}
	}
	if binding < runs/4 {
		t.Fatalf("the bound bound in %d of %d runs: the test does not exercise the walk", binding, runs)
	}
	t.Logf("%d runs, the bound moved partitions off their first vnode in %d", runs, binding)
}
