package ring

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// smallConfig keeps the many builds of these tests fast; the defaults get
// their own cases.
var smallConfig = Config{Partitions: 1021, ReplicationFactor: 40, Load: 1.1}

// adversarialIDs are names whose library vnode keys collide without a
// terminator ("node1"+"10" == "node11"+"0") plus unusual but valid IDs.
var adversarialIDs = []string{
	"node1", "node11", "node110", "node1100",
	"web-1", "web-11", "web-111",
	"10.0.0.1", "10.0.0.11", "10.0.0.111",
	"10.0.0.1:80", "10.0.0.1:801", "10.0.0.1:8011",
	"::1:80", "::1:8080", "2001:db8::1:443",
	"a.b_c-d", "a.b_c-d1", "_", "_1", "...", "..1",
	strings.Repeat("a", MaxIDLen), strings.Repeat("a", MaxIDLen-1) + "1",
	strings.Repeat("x", 100) + "1", strings.Repeat("x", 100) + "11",
}

func TestValidateID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"host port", "10.0.0.1:8080", true},
		{"bare ipv4", "10.0.0.1", true},
		{"ipv6 without brackets", "::1:80", true},
		{"name", "web-0", true},
		{"every allowed kind", "AZaz09._:-", true},
		{"dots in a name", "a..b", true},
		{"three dots", "...", true},
		{"max length", strings.Repeat("a", MaxIDLen), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", MaxIDLen+1), false},
		{"dot", ".", false},
		{"dot dot", "..", false},
		{"leading dash", "-web", false},
		{"brackets", "[::1]:80", false},
		{"slash", "a/b", false},
		{"question mark", "a?b", false},
		{"hash", "a#b", false},
		{"percent", "a%2Fb", false},
		{"space", "web 0", false},
		{"tab", "web\t0", false},
		{"newline", "web0\n", false},
		{"nul", "web\x000", false},
		{"del", "web\x7f", false},
		{"unicode", "ünïcødé-后端", false},
		{"right-to-left override", "web\u202e0", false},
		{"zero-width space", "web\u200b0", false},
		{"replacement character (a lone surrogate decoded)", "web\ufffd", false},
		{"invalid utf8", "web\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateID(tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateID(%q) = %v; want ok=%v", tt.id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidBackends) {
				t.Errorf("error %v does not wrap ErrInvalidBackends", err)
			}
		})
	}
	for _, id := range adversarialIDs {
		if err := ValidateID(id); err != nil {
			t.Errorf("ValidateID(%q) = %v; want nil", id, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero is defaults", Config{}, true},
		{"defaults", DefaultConfig(), true},
		{"minimums", Config{Partitions: 1, ReplicationFactor: 2, Load: 1}, true},
		{"maximums", Config{Partitions: MaxPartitions, ReplicationFactor: MaxReplicationFactor, Load: MaxLoad, Seed: strings.Repeat("s", MaxSeedLen)}, true},
		{"negative zero load", Config{Load: math.Copysign(0, -1)}, true},
		{"negative partitions", Config{Partitions: -1}, false},
		{"huge partitions", Config{Partitions: MaxPartitions + 1}, false},
		{"min int partitions", Config{Partitions: math.MinInt}, false},
		{"rf 1", Config{ReplicationFactor: 1}, false},
		{"negative rf", Config{ReplicationFactor: -5}, false},
		{"huge rf", Config{ReplicationFactor: math.MaxInt}, false},
		{"nan load", Config{Load: math.NaN()}, false},
		{"inf load", Config{Load: math.Inf(1)}, false},
		{"-inf load", Config{Load: math.Inf(-1)}, false},
		{"negative load", Config{Load: -1}, false},
		{"load below 1", Config{Load: 0.99}, false},
		{"huge load", Config{Load: MaxLoad * 2}, false},
		{"long seed", Config{Seed: strings.Repeat("s", MaxSeedLen+1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate(%+v) = %v; want ok=%v", tt.cfg, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if _, berr := Build(tt.cfg, []string{"a"}); (berr == nil) != tt.ok {
				t.Errorf("Build = %v; want ok=%v", berr, tt.ok)
			}
		})
	}
}

func TestConfigFingerprint(t *testing.T) {
	base := DefaultConfig()
	if got, want := (Config{}).Fingerprint(), base.Fingerprint(); got != want {
		t.Errorf("zero config fingerprint %#x; want the defaults' %#x", got, want)
	}
	if got, want := (Config{}).WithDefaults(), base; got != want {
		t.Errorf("WithDefaults() = %+v; want %+v", got, want)
	}
	variants := []Config{
		{Partitions: base.Partitions + 2, ReplicationFactor: base.ReplicationFactor, Load: base.Load},
		{Partitions: base.Partitions, ReplicationFactor: base.ReplicationFactor + 1, Load: base.Load},
		{Partitions: base.Partitions, ReplicationFactor: base.ReplicationFactor, Load: base.Load + 0.01},
		{Partitions: base.Partitions, ReplicationFactor: base.ReplicationFactor, Load: base.Load, Seed: "s"},
		{Partitions: base.Partitions, ReplicationFactor: base.ReplicationFactor, Load: base.Load, Seed: "t"},
	}
	seen := map[uint64]int{base.Fingerprint(): -1}
	for i, v := range variants {
		fp := v.Fingerprint()
		if j, dup := seen[fp]; dup {
			t.Errorf("variant %d and %d share fingerprint %#x", i, j, fp)
		}
		seen[fp] = i
	}
	// Pinned: the encoding is a wire contract between nodes of a mesh.
	if got, want := (Config{Partitions: 4093, ReplicationFactor: 50, Load: 1.25, Seed: "golden"}).Fingerprint(), uint64(goldenConfigFP); got != want {
		t.Errorf("config fingerprint = %#x; want %#x (canonical encoding changed)", got, want)
	}
}

func TestSeededHashMatchesXXHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 200)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for _, seed := range []uint64{0, 1, prime1, ^uint64(0), rng.Uint64(), rng.Uint64()} {
		for n := range len(buf) {
			var d xxhash.Digest
			d.ResetWithSeed(seed)
			d.Write(buf[:n])
			want := d.Sum64()
			if got := sum64Seeded(buf[:n], seed); got != want {
				t.Fatalf("sum64Seeded(len %d, seed %#x) = %#x; want %#x", n, seed, got, want)
			}
			if got := sum64(buf[:n], seed); got != want {
				t.Fatalf("sum64(len %d, seed %#x) = %#x; want %#x", n, seed, got, want)
			}
			if got := sum64String(string(buf[:n]), seed); got != want {
				t.Fatalf("sum64String(len %d, seed %#x) = %#x; want %#x", n, seed, got, want)
			}
		}
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		ids     []string
		wantErr error  // nil: success
		wantMsg string // substring of the message
	}{
		{"nil ids", smallConfig, nil, nil, ""},
		{"empty ids", smallConfig, []string{}, nil, ""},
		{"one", smallConfig, []string{"a"}, nil, ""},
		{"duplicate", smallConfig, []string{"b", "x", "a", "x"}, ErrInvalidBackends, `duplicate backend id "x"`},
		{"empty id", smallConfig, []string{"a", ""}, ErrInvalidBackends, "empty backend id"},
		{"invalid utf8", smallConfig, []string{"a\xff"}, ErrInvalidBackends, "is not one of"},
		{"more backends than partitions", Config{Partitions: 100}, seqIDs(120), ErrInvalidBackends, "ring: 120 backends exceed 100 partitions"},
		{"no room", Config{Partitions: 40, ReplicationFactor: 4, Load: 1}, seqIDs(3), ErrInvalidBackends, "can't hold 40 partitions"},
		{"exact room", Config{Partitions: 40, ReplicationFactor: 4, Load: 1}, seqIDs(4), nil, ""},
		{"rf 1", Config{ReplicationFactor: 1}, seqIDs(3), ErrInvalidConfig, "replication factor 1"},
		{"nan load", Config{Load: math.NaN()}, seqIDs(3), ErrInvalidConfig, "load NaN"},
		{"too many backends", smallConfig, seqIDs(MaxMembers + 1), ErrInvalidBackends, "at most 65535"},
		{"too many vnodes", Config{Partitions: MaxPartitions, ReplicationFactor: MaxReplicationFactor}, seqIDs(2098), ErrInvalidBackends, "lower the replication factor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Build(tt.cfg, tt.ids)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Build = %v; want success", err)
				}
				if r.Len() != len(tt.ids) {
					t.Errorf("Len() = %d; want %d", r.Len(), len(tt.ids))
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Build error = %v; want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Build error = %q; want it to contain %q", err, tt.wantMsg)
			}
			if r != nil {
				t.Errorf("Build returned a ring with an error")
			}
		})
	}
}

// TestVnodeLimit: the default config admits MaxVnodes / RF = 4194
// backends and refuses 4195 (checked without building); a lower RF
// admits more.
func TestVnodeLimit(t *testing.T) {
	cfg := DefaultConfig()
	if err := checkRoom(cfg, 4194); err != nil {
		t.Errorf("4194 backends at the defaults: %v; want accepted", err)
	}
	if err := checkRoom(cfg, 4195); !errors.Is(err, ErrInvalidBackends) || !strings.Contains(err.Error(), "lower the replication factor") {
		t.Errorf("4195 backends at the defaults: %v; want refused", err)
	}
	cfg.ReplicationFactor = 100
	if err := checkRoom(cfg, 10000); err != nil {
		t.Errorf("10000 backends at RF 100: %v; want accepted", err)
	}
}

func seqIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("b%d", i)
	}
	return ids
}

func TestEmptyRing(t *testing.T) {
	for _, r := range []*Ring{nil, mustBuild(t, smallConfig, nil)} {
		if _, _, err := r.Locate([]byte("k")); !errors.Is(err, ErrEmpty) {
			t.Errorf("Locate on %v ring: err = %v; want ErrEmpty", r, err)
		}
		if _, _, err := r.LocateString("k"); !errors.Is(err, ErrEmpty) {
			t.Errorf("LocateString: err = %v; want ErrEmpty", err)
		}
		if c := r.Candidates([]byte("k"), 3); len(c) != 0 {
			t.Errorf("Candidates = %v; want none", c)
		}
		if r.Len() != 0 || len(r.Members()) != 0 || r.Owner(0) != "" || len(r.Loads()) != 0 {
			t.Errorf("empty ring reports members")
		}
	}
	r := mustBuild(t, smallConfig, nil)
	if r.Partitions() != smallConfig.Partitions || r.Config() != smallConfig.WithDefaults() {
		t.Errorf("empty ring config = %+v, %d partitions; want %+v", r.Config(), r.Partitions(), smallConfig)
	}
	if _, p, _ := r.Locate([]byte("k")); p != r.Partition([]byte("k")) {
		t.Errorf("Locate partition %d; want %d", p, r.Partition([]byte("k")))
	}
	if r.Fingerprint() == 0 || r.Fingerprint() == mustBuild(t, smallConfig, []string{"a"}).Fingerprint() {
		t.Errorf("empty ring fingerprint %#x not distinct", r.Fingerprint())
	}
}

// TestDeterminism: the same set of IDs, in any order and after any history
// of joins and leaves, gives the same table and fingerprint.
func TestDeterminism(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	pool := append(slices.Clone(adversarialIDs), testIDs(40)...)
	for _, cfg := range []Config{smallConfig, {Partitions: 4093, ReplicationFactor: 20, Load: 1.25, Seed: "k"}, DefaultConfig(),
		v2(smallConfig), v2(Config{Partitions: 4093, ReplicationFactor: 20, Load: 1.02, Seed: "k"})} {
		final := slices.Clone(pool[:len(adversarialIDs)+10])
		want := mustBuild(t, cfg, final)
		rounds := 20
		if cfg == DefaultConfig() {
			rounds = 3
		}
		for round := range rounds {
			// A shuffled order of the final set.
			ids := slices.Clone(final)
			rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			if round%2 == 1 {
				// A history: random joins and leaves from the pool,
				// then converge on final the way a catalog would.
				set := map[string]bool{}
				var order []string
				for range 60 {
					id := pool[rng.IntN(len(pool))]
					if set[id] {
						delete(set, id)
					} else {
						set[id] = true
						order = append(order, id)
					}
				}
				for _, id := range ids {
					if !set[id] {
						set[id] = true
						order = append(order, id)
					}
				}
				ids = ids[:0]
				for _, id := range order {
					if set[id] && slices.Contains(final, id) && !slices.Contains(ids, id) {
						ids = append(ids, id)
					}
				}
			}
			got := mustBuild(t, cfg, ids)
			if !slices.Equal(got.owners, want.owners) || !slices.Equal(got.members, want.members) {
				t.Fatalf("config %+v round %d: table differs for order %q", cfg, round, ids)
			}
			if got.Fingerprint() != want.Fingerprint() {
				t.Fatalf("fingerprint %#x; want %#x", got.Fingerprint(), want.Fingerprint())
			}
		}
	}
}

// TestVnodeNamesUnambiguous shows the problem the terminator solves: with
// the library's plain name+index, adversarial IDs share vnode keys.
func TestVnodeNamesUnambiguous(t *testing.T) {
	plain, ours := map[string]string{}, map[string]string{}
	var plainClashes int
	for _, id := range adversarialIDs {
		for i := range 120 {
			k := fmt.Sprintf("%s%d", id, i)
			if other, ok := plain[k]; ok && other != id {
				plainClashes++
			}
			plain[k] = id
			k = fmt.Sprintf("%s%d", member{name: id + terminator}, i)
			if other, ok := ours[k]; ok {
				t.Fatalf("vnode key %q shared by %q and %q", k, other, id)
			}
			ours[k] = id
		}
	}
	if plainClashes == 0 {
		t.Errorf("adversarial IDs produce no clash without the terminator; the test lost its point")
	}
}

// TestMirror re-implements the library's bounded-load walk over our own
// vnode circle and checks it reproduces the library's table: our circle
// (used by Candidates) is the library's.
func TestMirror(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ids []string
	}{
		{smallConfig, adversarialIDs},
		{Config{Partitions: 4093, ReplicationFactor: 30, Load: 1.02, Seed: "mirror"}, testIDs(60)},
		{Config{Partitions: 40, ReplicationFactor: 2, Load: 1}, seqIDs(8)},
	} {
		r := mustBuild(t, tc.cfg, tc.ids)
		capacity := int(math.Ceil(float64(r.Partitions()/r.Len()) * r.cfg.Load))
		hashes, vm := vnodeHashes(r.members, r.cfg.ReplicationFactor, r.seed)
		loads := make([]int, r.Len())
		var b [8]byte
		for p := range r.Partitions() {
			b = [8]byte{byte(p), byte(p >> 8), byte(p >> 16), byte(p >> 24)}
			i, _ := slices.BinarySearch(hashes, sum64(b[:], r.seed))
			for ; ; i++ {
				if i == len(hashes) {
					i = 0
				}
				if m := vm[i]; loads[m]+1 <= capacity {
					loads[m]++
					if m != r.owners[p] {
						t.Fatalf("%+v: partition %d: mirror owner %q; library %q", tc.cfg, p, r.members[m], r.Owner(p))
					}
					break
				}
			}
		}
	}
}

func TestSeedChangesPlacement(t *testing.T) {
	ids := testIDs(20)
	a := mustBuild(t, Config{Seed: "alpha"}.withSmall(), ids)
	a2 := mustBuild(t, Config{Seed: "alpha"}.withSmall(), ids)
	b := mustBuild(t, Config{Seed: "beta"}.withSmall(), ids)
	u := mustBuild(t, Config{}.withSmall(), ids)
	if !slices.Equal(a.owners, a2.owners) || a.Fingerprint() != a2.Fingerprint() {
		t.Fatal("same seed, different placement")
	}
	for _, o := range []*Ring{b, u} {
		same := 0
		for p := range a.owners {
			if a.owners[p] == o.owners[p] {
				same++
			}
		}
		// Independent placements agree on about 1/N of the partitions.
		if share := float64(same) / float64(len(a.owners)); share > 0.2 {
			t.Errorf("seed %q vs %q: %.0f%% of partitions keep their owner; want about 5%%", a.cfg.Seed, o.cfg.Seed, 100*share)
		}
		if a.Fingerprint() == o.Fingerprint() {
			t.Errorf("different seeds, same fingerprint")
		}
		if a.Partition([]byte("some key")) == o.Partition([]byte("some key")) && a.Partition([]byte("other key")) == o.Partition([]byte("other key")) {
			t.Errorf("seed does not change key partitions")
		}
	}
}

func (c Config) withSmall() Config {
	c.Partitions, c.ReplicationFactor, c.Load = smallConfig.Partitions, smallConfig.ReplicationFactor, smallConfig.Load
	return c
}

func TestLocate(t *testing.T) {
	r := mustBuild(t, smallConfig, testIDs(10))
	for _, k := range testKeys()[:2000] {
		id, p, err := r.Locate(k)
		if err != nil {
			t.Fatal(err)
		}
		if p != r.Partition(k) || id != r.Owner(p) {
			t.Fatalf("Locate(%q) = %q, %d; want %q, %d", k, id, p, r.Owner(r.Partition(k)), r.Partition(k))
		}
		if p != int(xxhash.Sum64(k)%uint64(smallConfig.Partitions)) {
			t.Fatalf("partition of %q is not xxh64 %% P", k)
		}
		sid, sp, _ := r.LocateString(string(k))
		if sid != id || sp != p {
			t.Fatalf("LocateString(%q) = %q, %d; want %q, %d", k, sid, sp, id, p)
		}
	}
	loads := r.Loads()
	total := 0
	for _, n := range loads {
		total += n
	}
	if total != r.Partitions() || len(loads) != r.Len() {
		t.Errorf("Loads() sums to %d over %d members; want %d over %d", total, len(loads), r.Partitions(), r.Len())
	}
	if r.Owner(-1) != "" || r.Owner(r.Partitions()) != "" {
		t.Errorf("Owner out of range is not empty")
	}
	m := r.Members()
	m[0] = "changed"
	if r.Members()[0] == "changed" || !slices.IsSorted(r.Members()) {
		t.Errorf("Members() is not a sorted copy")
	}
}

func TestLocateAllocs(t *testing.T) {
	for _, seed := range []string{"", "secret"} {
		cfg := DefaultConfig()
		cfg.Seed = seed
		r := mustBuild(t, cfg, testIDs(10))
		key, skey := []byte("10.1.2.3"), "0123456789abcdef"
		if n := testing.AllocsPerRun(100, func() { sinkID, sinkPart, _ = r.Locate(key) }); n != 0 {
			t.Errorf("seed %q: Locate allocates %v times", seed, n)
		}
		if n := testing.AllocsPerRun(100, func() { sinkID, sinkPart, _ = r.LocateString(skey) }); n != 0 {
			t.Errorf("seed %q: LocateString allocates %v times", seed, n)
		}
	}
}

func TestCandidates(t *testing.T) {
	ids := testIDs(30)
	r := mustBuild(t, smallConfig, ids)
	for _, n := range []int{-1, 0, 1, 2, 5, 30, 31, 100} {
		for _, k := range testKeys()[:50] {
			c := r.Candidates(k, n)
			if want := max(0, min(n, r.Len())); len(c) != want {
				t.Fatalf("len(Candidates(%q, %d)) = %d; want %d", k, n, len(c), want)
			}
			if len(c) > 0 {
				if owner, _, _ := r.Locate(k); c[0] != owner {
					t.Fatalf("Candidates[0] = %q; want owner %q", c[0], owner)
				}
			}
			if s := slices.Compact(slices.Sorted(slices.Values(c))); len(s) != len(c) {
				t.Fatalf("Candidates(%q, %d) = %q has duplicates", k, n, c)
			}
		}
	}

	// Candidates[1] predicts the new owner when the owner leaves.
	cfg := DefaultConfig()
	cfg.Partitions = 16381
	for _, n := range []int{5, 20} {
		r := mustBuild(t, cfg, ids[:n])
		leaver := ids[0]
		after := mustBuild(t, cfg, ids[1:n])
		var owned, hit int
		for p := range r.Partitions() {
			if r.Owner(p) != leaver {
				continue
			}
			owned++
			if r.candidates(p, 2)[1] == after.Owner(p) {
				hit++
			}
		}
		share := float64(hit) / float64(owned)
		t.Logf("N=%d: Candidates[1] became the owner for %.1f%% of the %d partitions of the removed backend", n, 100*share, owned)
		if share < 0.75 {
			t.Errorf("N=%d: Candidates[1] predicted the new owner for %.1f%%; want ≥ 75%%", n, 100*share)
		}
	}
}

func TestZeroRingAndCapacity(t *testing.T) {
	var r Ring
	if _, _, err := r.Locate([]byte("k")); err != ErrEmpty {
		t.Fatalf("zero Ring Locate err = %v; want ErrEmpty", err)
	}
	if p := r.Partition([]byte("k")); p != -1 {
		t.Fatalf("zero Ring Partition = %d; want -1", p)
	}
	cfg := Config{Partitions: 7, ReplicationFactor: 2, Load: 1.25}
	for n := 0; n <= 9; n++ {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("b%d", i)
		}
		_, buildErr := Build(cfg, ids)
		if capErr := CheckCapacity(cfg, n); (capErr == nil) != (buildErr == nil) {
			t.Errorf("n=%d: CheckCapacity %v but Build %v", n, capErr, buildErr)
		}
	}
}
