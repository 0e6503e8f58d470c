package ring

import (
	"bytes"
	"math"
	"slices"
	"testing"
)

// FuzzBuild: arbitrary config values and member lists never make Build
// panic, and every ring it returns is consistent.
func FuzzBuild(f *testing.F) {
	seeds := []struct {
		p, rf int
		load  float64
		seed  string
		ids   []string
	}{
		{0, 0, 0, "", nil},
		{40, 4, 1, "", seqIDs(4)},
		{40, 4, 1, "", seqIDs(3)},
		{40, 1, 1.25, "", seqIDs(5)},
		{10, 2, 1.1, "x", seqIDs(12)},
		{1021, 40, 1.1, "", adversarialIDs},
		{7, 3, math.NaN(), "", seqIDs(2)},
		{7, 3, math.Inf(1), "", seqIDs(2)},
		{-1, -1, -1, "", []string{"a", "a"}},
		{3, 2, 2, "s", []string{"", "\xff", "a b"}},
	}
	for _, s := range seeds {
		f.Add(int64(s.p), int64(s.rf), s.load, s.seed, []byte(joinIDs(s.ids)))
	}
	f.Fuzz(func(t *testing.T, p, rf int64, load float64, seed string, raw []byte) {
		// Keep partitions, vnodes and members small enough for many runs
		// per second (zero would mean the large defaults, tested
		// elsewhere); negative and odd values pass through.
		cfg := Config{Partitions: int(p % 5000), ReplicationFactor: int(rf % 64), Load: load, Seed: seed}
		if cfg.Partitions == 0 {
			cfg.Partitions = 4999
		}
		if cfg.ReplicationFactor == 0 {
			cfg.ReplicationFactor = 64
		}
		var ids []string
		if len(raw) > 0 {
			for _, b := range bytes.Split(raw, []byte{'\n'}) {
				ids = append(ids, string(b))
			}
		}
		if len(ids) > 300 {
			ids = ids[:300]
		}
		for _, algo := range []string{AlgorithmV1, AlgorithmV2} {
			cfg.Algorithm = algo
			checkFuzzBuild(t, cfg, ids, raw)
		}
	})
}

// checkFuzzBuild builds cfg and ids and checks the ring is consistent.
func checkFuzzBuild(t *testing.T, cfg Config, ids []string, raw []byte) {
	r, err := buildNoPanic(t, cfg, ids)
	if err != nil {
		return
	}
	if r.Len() != len(ids) || !slices.IsSorted(r.Members()) {
		t.Fatalf("Len() = %d, members %q; want %d sorted", r.Len(), r.Members(), len(ids))
	}
	if r.Len() == 0 {
		if _, _, err := r.Locate(raw); err != ErrEmpty {
			t.Fatalf("Locate on empty ring: %v; want ErrEmpty", err)
		}
		return
	}
	if len(r.owners) != r.Partitions() {
		t.Fatalf("%d owners for %d partitions", len(r.owners), r.Partitions())
	}
	for part, o := range r.owners {
		if int(o) >= r.Len() || r.Owner(part) != r.members[o] {
			t.Fatalf("partition %d owner index %d not a member", part, o)
		}
	}
	id, part, err := r.Locate(raw)
	if err != nil || part != r.Partition(raw) || id != r.Owner(part) {
		t.Fatalf("Locate = %q, %d, %v; want %q, %d", id, part, err, r.Owner(r.Partition(raw)), r.Partition(raw))
	}
	c := r.Candidates(raw, r.Len()+1)
	if len(c) != r.Len() || c[0] != id {
		t.Fatalf("Candidates = %q; want %d starting with %q", c, r.Len(), id)
	}
	if s := slices.Compact(slices.Sorted(slices.Values(c))); len(s) != len(c) {
		t.Fatalf("Candidates %q has duplicates", c)
	}
}

func joinIDs(ids []string) string {
	var b bytes.Buffer
	for i, id := range ids {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(id)
	}
	return b.String()
}
