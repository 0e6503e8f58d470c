package ring

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// TestBuildCachesKeepTables: a build after any history of other builds,
// in this goroutine or concurrently in others, gives what a build with
// empty caches gives: the same owners, circle and fingerprint. The
// history adds and removes one backend or several, jumps to unrelated
// sets and switches config, so every cache path is taken: the circle
// found whole, merged from a close one, or computed; group tables found
// or computed.
func TestBuildCachesKeepTables(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	pool := append(testIDs(300), adversarialIDs...)
	cfgs := []Config{
		v2(Config{Partitions: 4093, ReplicationFactor: 40, Load: 1.05}),
		v2(Config{Partitions: 4093, ReplicationFactor: 40, Load: 1.05, Seed: "k"}),
		v2(Config{Partitions: 8191, ReplicationFactor: 25, Load: 1.1}),
		{Partitions: 2039, ReplicationFactor: 20, Load: 1.1}, // v1 uses the circle too
	}
	type step struct {
		cfg Config
		ids []string
	}
	in := map[string]bool{}
	for _, i := range rng.Perm(len(pool))[:150] {
		in[pool[i]] = true
	}
	cfg := cfgs[0]
	var steps []step
	for range 30 {
		switch x := rng.IntN(10); {
		case x < 4: // one join or leave
			id := pool[rng.IntN(len(pool))]
			in[id] = !in[id]
		case x < 6: // several
			for range 1 + rng.IntN(12) {
				id := pool[rng.IntN(len(pool))]
				in[id] = !in[id]
			}
		case x < 7: // another set
			clear(in)
			for _, i := range rng.Perm(len(pool))[:50+rng.IntN(200)] {
				in[pool[i]] = true
			}
		case x < 8:
			cfg = cfgs[rng.IntN(len(cfgs))]
		}
		var ids []string
		for id, ok := range in {
			if ok {
				ids = append(ids, id)
			}
		}
		rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		steps = append(steps, step{cfg, ids})
	}
	want := make([]*Ring, len(steps))
	for i, s := range steps {
		resetBuildCaches()
		want[i] = mustBuild(t, s.cfg, s.ids)
	}
	same := func(i int, got *Ring) bool {
		w := want[i]
		return got.Fingerprint() == w.Fingerprint() && slices.Equal(got.owners, w.owners) &&
			slices.Equal(got.vnodeHi, w.vnodeHi) && slices.Equal(got.vnodeMember, w.vnodeMember)
	}
	resetBuildCaches()
	for i, s := range steps {
		if got := mustBuild(t, s.cfg, s.ids); !same(i, got) {
			t.Fatalf("step %d (%d backends, %+v): the table after a history differs from a build with empty caches", i, len(s.ids), s.cfg)
		}
	}
	// Concurrent builders, each replaying the history in its own order.
	var wg sync.WaitGroup
	for g := range 3 {
		order := rand.New(rand.NewPCG(uint64(g), 2)).Perm(len(steps))
		wg.Go(func() {
			for _, i := range order {
				got, err := Build(steps[i].cfg, steps[i].ids)
				if err != nil || !same(i, got) {
					t.Errorf("builder %d, step %d: %v; or the table differs from a build with empty caches", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestV2SlackGroupsMatchLibrary: the groups whose bound cannot bind
// (boundIsSlack) get from step 3 the table their library ring would give:
// building with every group through the library changes nothing.
func TestV2SlackGroupsMatchLibrary(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		n   int
	}{
		{v2(Config{ReplicationFactor: 200}), 100},
		{v2(Config{ReplicationFactor: 200}), 700},
		{v2(Config{Partitions: 4093, ReplicationFactor: 50, Load: 1.02, Seed: "s"}), 300},
		{v2(Config{Partitions: 1021, ReplicationFactor: 30, Load: 1.25}), 600},
	} {
		ids := testIDs(tc.n)
		tables := make([][]uint16, 2)
		var slack int
		for i, skip := range []bool{true, false} {
			r, err := newRing(tc.cfg, ids)
			if err != nil {
				t.Fatal(err)
			}
			s, err := r.buildV2(skip)
			if err != nil {
				t.Fatal(err)
			}
			if skip {
				slack = s
			}
			tables[i] = r.owners
		}
		if slack == 0 {
			t.Fatalf("%+v, %d backends: no slack group; the test lost its point", tc.cfg, tc.n)
		}
		if !slices.Equal(tables[0], tables[1]) {
			t.Errorf("%+v, %d backends: skipping %d slack groups changed the table", tc.cfg, tc.n, slack)
		}
		t.Logf("%+v, %d backends: %d slack groups", tc.cfg, tc.n, slack)
	}
}

// TestSortHashes: the bucket sort orders any keys, also keys crafted to
// share a bucket (the general sort's path), and carries values along.
func TestSortHashes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 2, 3, 100, 5000} {
		for _, crowd := range []bool{false, true} {
			keys, vals := make([]uint64, n), make([]int, n)
			for i := range keys {
				keys[i], vals[i] = rng.Uint64(), i
				if crowd {
					keys[i] >>= 40 // all in bucket 0
				}
			}
			orig := slices.Clone(keys)
			k, v := sortHashes(keys, vals)
			if !slices.IsSorted(k) {
				t.Fatalf("n=%d crowd=%v: not sorted", n, crowd)
			}
			for i := range k {
				if orig[v[i]] != k[i] {
					t.Fatalf("n=%d crowd=%v: value %d not carried with its key", n, crowd, i)
				}
			}
		}
	}
}

// TestGenCacheBound: the cache keeps at most two generations of its limit,
// and what a build uses again survives the turn of a generation.
func TestGenCacheBound(t *testing.T) {
	c := newGenCache[int, int](100)
	for i := range 1000 {
		c.put(i, i, 10)
		if _, ok := c.get(0); !ok {
			t.Fatalf("after %d puts: entry 0, used after every put, was dropped", i)
		}
	}
	if n := len(c.cur) + len(c.old); n > 20 {
		t.Errorf("%d entries of 10 bytes under a limit of 100", n)
	}
	if _, ok := c.get(500); ok {
		t.Errorf("entry 500, unused since, is still there")
	}
	c.put(-1, 0, 101)
	if _, ok := c.get(-1); ok {
		t.Errorf("an entry over the limit was kept")
	}
}
