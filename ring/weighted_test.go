package ring

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// TestWeightedShares: 1:2:3:4 gives 10/20/30/40 % of 1 M keys within 5 %
// of each share, with the default config.
func TestWeightedShares(t *testing.T) {
	ids := []string{"a", "b", "c", "d"}
	weights := map[string]int{"a": 1, "b": 2, "c": 3, "d": 4}
	r, err := BuildWeighted(Config{}, ids, weights)
	if err != nil {
		t.Fatal(err)
	}
	const keys = 1_000_000
	counts := map[string]int{}
	for i := range keys {
		id, _, err := r.LocateString("session-" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		counts[id]++
	}
	for _, id := range ids {
		want := float64(weights[id]) / 10
		got := float64(counts[id]) / keys
		t.Logf("%s weight %d: %.2f %% of keys (want %.0f %%)", id, weights[id], 100*got, 100*want)
		if got < want*0.95 || got > want*1.05 {
			t.Errorf("%s: share %.4f, want %.2f ± 5 %%", id, got, want)
		}
		if w := r.Weight(id); w != weights[id] {
			t.Errorf("Weight(%s) = %d, want %d", id, w, weights[id])
		}
	}
}

// TestWeightedDeterminism: the same ids and weights in any order build the
// same table and fingerprint; a different weight a different fingerprint.
func TestWeightedDeterminism(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cfg := Config{Partitions: 7919, ReplicationFactor: 50}
	for trial := range 20 {
		n := 2 + rng.IntN(12)
		ids := make([]string, n)
		weights := map[string]int{}
		for i := range ids {
			ids[i] = fmt.Sprintf("b-%d-%d", trial, i)
			weights[ids[i]] = 1 + rng.IntN(MaxWeight)
		}
		a, err := BuildWeighted(cfg, ids, weights)
		if err != nil {
			t.Fatal(err)
		}
		shuffled := slices.Clone(ids)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		b, err := BuildWeighted(cfg, shuffled, weights)
		if err != nil {
			t.Fatal(err)
		}
		if a.Fingerprint() != b.Fingerprint() || !slices.Equal(a.owners, b.owners) {
			t.Fatalf("trial %d: order changed the weighted ring", trial)
		}
		weights[ids[0]] = weights[ids[0]]%MaxWeight + 1
		c, err := BuildWeighted(cfg, ids, weights)
		if err != nil {
			t.Fatal(err)
		}
		if c.Fingerprint() == a.Fingerprint() {
			t.Fatalf("trial %d: a weight change kept the fingerprint", trial)
		}
	}
}

// TestWeightOneIsUnweighted: weights all 1 (or absent) are the unweighted
// ring exactly, so existing meshes keep placement and fingerprints.
func TestWeightOneIsUnweighted(t *testing.T) {
	ids := []string{"x", "y", "z"}
	cfg := Config{Partitions: 7919, ReplicationFactor: 50}
	a, err := Build(cfg, ids)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildWeighted(cfg, ids, map[string]int{"x": 1, "y": 1})
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() != b.Fingerprint() {
		t.Fatal("weights of 1 changed the fingerprint")
	}
}

// TestWeightChangeMovesLittle: raising one weight of ten from 1 to 2 moves
// keys onto that backend, and few between the others.
func TestWeightChangeMovesLittle(t *testing.T) {
	ids := make([]string, 10)
	weights := map[string]int{}
	for i := range ids {
		ids[i] = "w" + strconv.Itoa(i)
		weights[ids[i]] = 1 + i%3
	}
	a, err := BuildWeighted(Config{}, ids, weights)
	if err != nil {
		t.Fatal(err)
	}
	weights["w0"]++
	b, err := BuildWeighted(Config{}, ids, weights)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	moved, collateral := 0, 0
	for p := range a.owners {
		oa, ob := a.members[a.owners[p]], b.members[b.owners[p]]
		if oa != ob {
			moved++
			if ob != "w0" {
				collateral++
			}
		}
	}
	P := float64(len(a.owners))
	ideal := 1 / float64(total) // the share w0 gains
	t.Logf("moved %.2f %% of partitions (ideal %.2f %%), %.2f %% between other backends", 100*float64(moved)/P, 100*ideal, 100*float64(collateral)/P)
	if float64(moved)/P > 2*ideal || float64(collateral)/P > ideal/2 {
		t.Fatalf("moved %d, collateral %d of %v partitions: want about %.0f moved, none collateral", moved, collateral, P, ideal*P)
	}
}

// On v2 a weighted ring is v1's weighted ring: the walk, not the group
// rings, which would bound a heavy backend at its group's mean.
func TestWeightedV2IsTheWeightedWalk(t *testing.T) {
	ids := make([]string, 40)
	weights := map[string]int{}
	for i := range ids {
		ids[i] = "10.0." + strconv.Itoa(i) + ".1:8080"
		weights[ids[i]] = 1 + i%4
	}
	v1, err := BuildWeighted(Config{Algorithm: AlgorithmV1}, ids, weights)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := BuildWeighted(Config{Algorithm: AlgorithmV2}, ids, weights)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v1.owners, v2.owners) {
		t.Fatal("v2's weighted table differs from v1's")
	}
	if v1.Fingerprint() == v2.Fingerprint() {
		t.Fatal("v1 and v2 weighted rings share a fingerprint: the algorithm must stay in it")
	}
	if got := v2.Weight(ids[3]); got != 4 {
		t.Fatalf("weight of %s on v2: %d, want 4", ids[3], got)
	}
}

func TestWeightedRefusals(t *testing.T) {
	ids := []string{"a", "b"}
	if _, err := BuildWeighted(Config{Algorithm: AlgorithmV2}, ids, map[string]int{"a": 1}); err != nil {
		t.Fatalf("v2 with weights of 1: %v", err)
	}
	for _, w := range []int{0, -1, MaxWeight + 1} {
		if _, err := BuildWeighted(Config{}, ids, map[string]int{"a": w}); !errors.Is(err, ErrInvalidBackends) {
			t.Fatalf("weight %d: %v, want ErrInvalidBackends", w, err)
		}
	}
	heavy := map[string]int{}
	var many []string
	for i := range 20 {
		many = append(many, "h"+strconv.Itoa(i))
		heavy[many[i]] = MaxWeight
	}
	if _, err := BuildWeighted(Config{ReplicationFactor: MaxReplicationFactor}, many, heavy); !errors.Is(err, ErrInvalidBackends) {
		t.Fatalf("too many vnodes: %v, want ErrInvalidBackends", err)
	}
}

// FuzzWeightedDeterminism: any ids and weights build a ring or a clear
// error, never a panic, and the same ring whatever the order.
func FuzzWeightedDeterminism(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4}, uint64(7))
	f.Add([]byte{100, 1, 0, 200, 50}, uint64(0))
	f.Fuzz(func(t *testing.T, ws []byte, seed uint64) {
		if len(ws) == 0 || len(ws) > 16 {
			return
		}
		cfg := Config{Partitions: 997, ReplicationFactor: 8, Seed: strconv.FormatUint(seed, 10)}
		ids := make([]string, len(ws))
		weights := map[string]int{}
		for i, w := range ws {
			ids[i] = "f" + strconv.Itoa(i)
			weights[ids[i]] = int(w)
		}
		a, errA := BuildWeighted(cfg, ids, weights)
		slices.Reverse(ids)
		b, errB := BuildWeighted(cfg, ids, weights)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("order changed the outcome: %v vs %v", errA, errB)
		}
		if errA != nil {
			return
		}
		if a.Fingerprint() != b.Fingerprint() {
			t.Fatal("order changed the fingerprint")
		}
		loads := a.Loads()
		total := 0
		for _, id := range ids {
			total += weights[id]
		}
		for _, id := range ids {
			if bound := float64(cfg.Partitions)*float64(weights[id])/float64(total)*DefaultLoad + 1; float64(loads[id]) > bound {
				t.Fatalf("%s owns %d partitions, bound %.1f", id, loads[id], bound)
			}
		}
	})
}

// BenchmarkBuildWeighted: 100 backends weighted 1-4 at the defaults, the
// weighted walk replacing the library's.
func BenchmarkBuildWeighted(b *testing.B) {
	ids := make([]string, 100)
	weights := map[string]int{}
	for i := range ids {
		ids[i] = "web-" + strconv.Itoa(i)
		weights[ids[i]] = 1 + i%4
	}
	for b.Loop() {
		if _, err := BuildWeighted(Config{}, ids, weights); err != nil {
			b.Fatal(err)
		}
	}
}
