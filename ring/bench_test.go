package ring

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Measurements behind the defaults (DEFAULTS.md). They run only on request:
//
//	MESHLB_RING_FIGURES=1 go test -p 1 -run TestRingFigures -v ./ring/   the default config's table
//	MESHLB_RING_SWEEP=1   go test -p 1 -run TestRingSweep -v -timeout 30m ./ring/
//	go test -p 1 -run '^$' -bench . -benchmem ./ring/

// testKeyCount is the size of the key population for movement and balance.
const testKeyCount = 1_000_000

// testKeys returns the reproducible key population: half IPv4 strings like
// "10.1.2.3", half 16-byte random session IDs.
var testKeys = sync.OnceValue(func() [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([][]byte, testKeyCount)
	for i := range keys {
		if i%2 == 0 {
			keys[i] = fmt.Appendf(nil, "%d.%d.%d.%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(256))
		} else {
			k := make([]byte, 16)
			for j := range k {
				k[j] = byte(rng.Uint32())
			}
			keys[i] = k
		}
	}
	return keys
})

// keyHashes caches the unkeyed hash of every test key: a key's partition
// is hash % P for any P, so one pass serves every config.
var keyHashes = sync.OnceValue(func() []uint64 {
	keys := testKeys()
	hs := make([]uint64, len(keys))
	for i, k := range keys {
		hs[i] = sum64(k, 0)
	}
	return hs
})

// partitionWeights returns how many test keys fall into each partition.
func partitionWeights(p int) []int {
	w := make([]int, p)
	for _, h := range keyHashes() {
		w[h%uint64(p)]++
	}
	return w
}

// testIDs returns n distinct realistic backend IDs (host:port), the same
// list every time, so that ids[:n] is "the cluster of n".
func testIDs(n int) []string {
	rng := rand.New(rand.NewPCG(3, 4))
	seen := map[string]bool{}
	ids := make([]string, 0, n)
	for len(ids) < n {
		id := fmt.Sprintf("10.%d.%d.%d:%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), 8000+rng.IntN(10))
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// balance returns max/mean and min/mean of keys per backend.
func balance(r *Ring, w []int) (maxMean, minMean float64) {
	per := make([]int, r.Len())
	for p, o := range r.owners {
		per[o] += w[p]
	}
	mean := float64(testKeyCount) / float64(r.Len())
	return float64(slices.Max(per)) / mean, float64(slices.Min(per)) / mean
}

// movement compares the owners of every key before and after one backend
// changed (joined or left): moved is the share of keys whose owner
// changed, collateral the share that moved between two backends that are
// in both rings.
func movement(before, after *Ring, changed string, w []int) (moved, collateral float64) {
	var m, c int
	for p := range w {
		a, b := before.Owner(p), after.Owner(p)
		if a != b {
			m += w[p]
			if a != changed && b != changed {
				c += w[p]
			}
		}
	}
	return float64(m) / testKeyCount, float64(c) / testKeyCount
}

// churn is the movement over several single joins and leaves at size n,
// as ratios of the ideal share (1/(n+1) on join, 1/n on leave).
type churn struct {
	joinMean, joinMax, leaveMean, leaveMax float64
	collateral                             float64 // max share of all keys
}

func measureChurn(t testing.TB, cfg Config, ids []string, n, trials int, w []int) churn {
	base := mustBuild(t, cfg, ids[:n])
	var c churn
	for k := range trials {
		joiner := ids[n+k]
		after := mustBuild(t, cfg, append(slices.Clone(ids[:n]), joiner))
		moved, coll := movement(base, after, joiner, w)
		ratio := moved * float64(n+1)
		c.joinMean += ratio / float64(trials)
		c.joinMax = max(c.joinMax, ratio)
		c.collateral = max(c.collateral, coll)

		leaver := ids[k*n/trials]
		after = mustBuild(t, cfg, slices.DeleteFunc(slices.Clone(ids[:n]), func(s string) bool { return s == leaver }))
		moved, coll = movement(base, after, leaver, w)
		ratio = moved * float64(n)
		c.leaveMean += ratio / float64(trials)
		c.leaveMax = max(c.leaveMax, ratio)
		c.collateral = max(c.collateral, coll)
	}
	return c
}

func mustBuild(t testing.TB, cfg Config, ids []string) *Ring {
	t.Helper()
	r, err := Build(cfg, ids)
	if err != nil {
		t.Fatalf("Build(%+v, %d ids): %v", cfg, len(ids), err)
	}
	return r
}

func buildTime(t testing.TB, cfg Config, ids []string) time.Duration {
	start := time.Now()
	mustBuild(t, cfg, ids)
	return time.Since(start)
}

var figureSizes = []int{3, 10, 20, 50, 100}

// TestRingFigures prints movement, collateral and balance for the default
// config at N = 3, 10, 20, 50, 100, and build times (make bench).
func TestRingFigures(t *testing.T) {
	if os.Getenv("MESHLB_RING_FIGURES") != "1" {
		t.Skip("set MESHLB_RING_FIGURES=1 to print the default config's figures")
	}
	cfg := DefaultConfig()
	if a := os.Getenv("MESHLB_RING_FIGURES_ALGO"); a != "" {
		cfg = Config{Algorithm: a}.WithDefaults()
	}
	// Other configs for comparison, one value each.
	cfg.Partitions = envList(t, "MESHLB_RING_FIGURES_P", []int{cfg.Partitions})[0]
	cfg.ReplicationFactor = envList(t, "MESHLB_RING_FIGURES_RF", []int{cfg.ReplicationFactor})[0]
	cfg.Load = envList(t, "MESHLB_RING_FIGURES_LOAD", []float64{cfg.Load})[0]
	sizes := envList(t, "MESHLB_RING_FIGURES_N", figureSizes)
	ids := testIDs(slices.Max(sizes) + 5)
	w := partitionWeights(cfg.Partitions)
	const trials = 5
	var out strings.Builder
	fmt.Fprintf(&out, "config %s P=%d RF=%d Load=%v; %d keys; %d joins and %d leaves per N\n",
		cfg.Algorithm, cfg.Partitions, cfg.ReplicationFactor, cfg.Load, testKeyCount, trials, trials)
	fmt.Fprintf(&out, "%5s | %-22s | %-22s | %10s | %8s | %8s | %9s | %9s | %9s | %5s\n", "N", "join moved/ideal mean·max", "leave moved/ideal mean·max", "collateral", "max/mean", "min/mean", "build", "build CPU", "join CPU", "MB")
	for _, n := range sizes {
		churnCol := "(no churn: N+1 is over the capacity)                "
		if CheckCapacity(cfg, n+1) == nil {
			c := measureChurn(t, cfg, ids, n, trials, w)
			churnCol = fmt.Sprintf("%10.3f · %-9.3f | %10.3f · %-10.3f | %9.3f%%", c.joinMean, c.joinMax, c.leaveMean, c.leaveMax, 100*c.collateral)
		}
		runs := 3 // the median of 3 builds
		// Cold builds (caches emptied first), as a node's first; then
		// joins of a backend never seen, after a build of the n (the
		// caches as a node has them after its last rebuild).
		var walls, cpus, joins []time.Duration
		var r *Ring
		for k := range runs {
			resetBuildCaches()
			start, cpu := time.Now(), cpuTime()
			r = mustBuild(t, cfg, ids[:n])
			walls, cpus = append(walls, time.Since(start)), append(cpus, cpuTime()-cpu)
			joined := append(slices.Clone(ids[:n]), fmt.Sprintf("10.254.0.%d:9000", k))
			if CheckCapacity(cfg, n+1) == nil {
				cpu = cpuTime()
				mustBuild(t, cfg, joined)
				joins = append(joins, cpuTime()-cpu)
			}
		}
		slices.Sort(walls)
		slices.Sort(cpus)
		slices.Sort(joins)
		joinCol := "        -"
		if len(joins) > 0 {
			joinCol = fmt.Sprintf("%7.1fms", ms(joins[len(joins)/2]))
		}
		mx, mn := balance(r, w)
		fmt.Fprintf(&out, "%5d | %s | %8.3f | %8.3f | %7.1fms | %7.1fms | %s | %5.2f",
			n, churnCol, mx, mn, ms(walls[len(walls)/2]), ms(cpus[len(cpus)/2]), joinCol, float64(r.retainedBytes())/(1<<20))
		if cfg.Algorithm == AlgorithmV2 && n <= 300 {
			// What a mesh switching from v1 moves (DEFAULTS.md, migration).
			v1 := cfg
			v1.Algorithm = AlgorithmV1
			moved, _ := movement(mustBuild(t, v1, ids[:n]), r, "", w)
			fmt.Fprintf(&out, " | v1→v2 moves %.3f%%", 100*moved)
		}
		fmt.Fprintln(&out)
	}
	// Stdout rather than t.Log, so that make bench shows it without -v.
	fmt.Print(out.String())
}

// TestRingSweep measures the (Partitions, ReplicationFactor, Load) grid
// that DEFAULTS.md summarises. It takes a few minutes.
func TestRingSweep(t *testing.T) {
	if os.Getenv("MESHLB_RING_SWEEP") != "1" {
		t.Skip("set MESHLB_RING_SWEEP=1 to run the defaults sweep")
	}
	ps := envList(t, "MESHLB_RING_SWEEP_P", []int{16381, 32749, 65521})
	rfs := envList(t, "MESHLB_RING_SWEEP_RF", []int{50, 100, 200, 300, 500})
	loads := envList(t, "MESHLB_RING_SWEEP_LOAD", []float64{1.02, 1.05, 1.1, 1.15, 1.25})
	ids := testIDs(200)
	t.Logf("%6s %4s %5s | %-11s %-11s %-11s %-11s | %6s | %6s %6s | %7s | %s",
		"P", "RF", "Load", "join10", "leave10", "join100", "leave100", "coll%", "max", "min", "b100", "targets")
	for _, p := range ps {
		w := partitionWeights(p)
		for _, rf := range rfs {
			for _, load := range loads {
				cfg := Config{Partitions: p, ReplicationFactor: rf, Load: load}
				c10 := measureChurn(t, cfg, ids, 10, 4, w)
				c100 := measureChurn(t, cfg, ids, 100, 2, w)
				worstMax, worstMin := 0.0, math.Inf(1)
				for _, n := range figureSizes {
					mx, mn := balance(mustBuild(t, cfg, ids[:n]), w)
					worstMax, worstMin = max(worstMax, mx), min(worstMin, mn)
				}
				b100 := buildTime(t, cfg, ids[:100])
				coll := max(c10.collateral, c100.collateral)
				var miss []string
				if max(c10.joinMax, c10.leaveMax, c100.joinMax, c100.leaveMax) > 1.10 {
					miss = append(miss, "moved")
				}
				if coll > 0.005 {
					miss = append(miss, "collateral")
				}
				if worstMax > 1.15 || worstMin < 0.85 {
					miss = append(miss, "balance")
				}
				if b100 > 500*time.Millisecond {
					miss = append(miss, "build")
				}
				verdict := "ALL MET"
				if len(miss) > 0 {
					verdict = "miss " + strings.Join(miss, ",")
				}
				t.Logf("%6d %4d %5.2f | %5.3f·%5.3f %5.3f·%5.3f %5.3f·%5.3f %5.3f·%5.3f | %6.3f | %6.3f %6.3f | %5dms | %s",
					p, rf, load, c10.joinMean, c10.joinMax, c10.leaveMean, c10.leaveMax,
					c100.joinMean, c100.joinMax, c100.leaveMean, c100.leaveMax,
					100*coll, worstMax, worstMin, b100.Milliseconds(), verdict)
			}
		}
	}
}

// envList reads a comma-separated list from the environment, or returns
// def when the variable is unset.
func envList[T int | float64](t *testing.T, name string, def []T) []T {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []T
	for _, f := range strings.Split(v, ",") {
		var x T
		if _, err := fmt.Sscan(f, &x); err != nil {
			t.Fatalf("%s: %q: %v", name, f, err)
		}
		out = append(out, x)
	}
	return out
}

var (
	sinkID   string
	sinkPart int
)

func BenchmarkLocate(b *testing.B) {
	r := mustBuild(b, DefaultConfig(), testIDs(100))
	keys := testKeys()[:1024]
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id, p, err := r.Locate(keys[i&1023])
		if err != nil {
			b.Fatal(err)
		}
		sinkID, sinkPart = id, p
		i++
	}
}

// BenchmarkLocateV2: the same lookup on a v2 ring of 1000 backends (the
// owner table has the same size; only who fills it differs).
func BenchmarkLocateV2(b *testing.B) {
	r := mustBuild(b, Config{Algorithm: AlgorithmV2}, testIDs(1000))
	keys := testKeys()[:1024]
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id, p, err := r.Locate(keys[i&1023])
		if err != nil {
			b.Fatal(err)
		}
		sinkID, sinkPart = id, p
		i++
	}
}

func BenchmarkLocateSeeded(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Seed = "mesh secret"
	r := mustBuild(b, cfg, testIDs(100))
	keys := testKeys()[:1024]
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id, p, err := r.Locate(keys[i&1023])
		if err != nil {
			b.Fatal(err)
		}
		sinkID, sinkPart = id, p
		i++
	}
}

func BenchmarkLocateString(b *testing.B) {
	r := mustBuild(b, DefaultConfig(), testIDs(100))
	keys := make([]string, 1024)
	for i, k := range testKeys()[:1024] {
		keys[i] = string(k)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id, p, err := r.LocateString(keys[i&1023])
		if err != nil {
			b.Fatal(err)
		}
		sinkID, sinkPart = id, p
		i++
	}
}

func BenchmarkCandidates(b *testing.B) {
	r := mustBuild(b, DefaultConfig(), testIDs(100))
	keys := testKeys()[:1024]
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sinkID = r.Candidates(keys[i&1023], 3)[2]
		i++
	}
}

// BenchmarkBuild: N=100 and N=1000 are v1 (the default) as before;
// algo=v2 builds the same backends with the v2 algorithm.
func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{100, 300, 1000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			benchBuild(b, DefaultConfig(), n)
		})
	}
	for _, n := range []int{100, 300, 1000} {
		b.Run(fmt.Sprintf("join/N=%d", n), func(b *testing.B) {
			benchJoin(b, DefaultConfig(), n)
		})
	}
	for _, n := range []int{100, 300, 1000} {
		b.Run(fmt.Sprintf("algo=v2/N=%d", n), func(b *testing.B) {
			benchBuild(b, Config{Algorithm: AlgorithmV2}, n)
		})
	}
	for _, n := range []int{100, 300, 1000} {
		b.Run(fmt.Sprintf("algo=v2/join/N=%d", n), func(b *testing.B) {
			benchJoin(b, Config{Algorithm: AlgorithmV2}, n)
		})
	}
}

// BenchmarkMeshRebuild is the ring's share of make bench-convergence: 100
// nodes in one process rebuild after one join to 300 backends, at once,
// each from the caches its build before the change left. cpu-ms is the
// CPU of all 100 rebuilds.
func BenchmarkMeshRebuild(b *testing.B) {
	const nodes, n = 100, 300
	cfg := Config{Algorithm: AlgorithmV2}
	ids := testIDs(n)
	resetBuildCaches()
	i := 0
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		mustBuild(b, cfg, ids)
		joined := append(slices.Clone(ids), fmt.Sprintf("10.253.%d.%d:9000", i/256%256, i%256))
		i++
		b.StartTimer()
		start := cpuTime()
		var wg sync.WaitGroup
		for range nodes {
			wg.Go(func() {
				if _, err := Build(cfg, joined); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
		cpu += cpuTime() - start
	}
	b.ReportMetric(ms(cpu)/float64(b.N), "cpu-ms/op")
}

// benchBuild times cold builds: the build caches are emptied before each,
// so every build computes everything, as a node's first build does.
func benchBuild(b *testing.B, cfg Config, n int) {
	ids := testIDs(n)
	b.ReportAllocs()
	var r *Ring
	cpu := cpuTime()
	for b.Loop() {
		resetBuildCaches()
		r = mustBuild(b, cfg, ids)
	}
	b.ReportMetric(ms(cpuTime()-cpu)/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(r.retainedBytes())/(1<<20), "MB-kept")
}

// benchJoin times what a node pays for one change: the build after a new
// backend joins n others, the caches holding what the build before it
// (the n, untimed) left there. The joiner is new every time, so its vnodes
// and the groups it changes are never in the cache.
func benchJoin(b *testing.B, cfg Config, n int) {
	ids := testIDs(n)
	b.ReportAllocs()
	resetBuildCaches()
	i := 0
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		mustBuild(b, cfg, ids)
		joined := append(slices.Clone(ids), fmt.Sprintf("10.255.%d.%d:9000", i/256%256, i%256))
		i++
		b.StartTimer()
		start := cpuTime()
		mustBuild(b, cfg, joined)
		cpu += cpuTime() - start
	}
	b.ReportMetric(ms(cpu)/float64(b.N), "cpu-ms/op")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// retainedBytes is the size of the slices a ring keeps after Build (the
// owner table, members, vnode circles), what a node holds per ring.
func (r *Ring) retainedBytes() int {
	n := 2*len(r.owners) + 6*len(r.vnodeHi) // owners, circle

	for _, id := range r.members {
		n += 16 + len(id)
	}
	return n
}
