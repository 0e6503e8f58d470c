package node

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
	"github.com/meshlb/meshlb/internal/testlog"
	"github.com/meshlb/meshlb/ring"
)

// BenchmarkConvergence measures, with the production gossip defaults on
// loopback, the time from a backend change on one node until each node runs
// a ring that has it: gossip delivery (or repair) + coalescing + rebuild +
// swap. Each iteration adds or removes one backend through a different node.
//
//	go test -run '^$' -bench Convergence -benchtime 5x ./node/
//
// Reported: median-s (over every node of every iteration), p99-s, and
// slowest-s (the last node of the slowest iteration); build-ms-median and
// build-ms-max, the time a node spent in ring builds for one change
// (meshlb_ring_build_seconds; wall time, so inflated when N nodes share
// 2 cores), cpu-s, the process CPU per change for all N nodes (gossip
// included), and idle-cores, the CPU the N nodes take when nothing
// changes, in cores.
//
// ring=default uses the default ring, whose build (~15 ms, the library's
// partition distribution) every node repeats: N nodes in one process share
// 2 cores, so at N = 100 the builds alone take ~0.75 s of wall time, which a
// real mesh spreads over N machines. ring=small (the library's own P=271,
// RF=20) builds in well under a millisecond and so shows what gossip,
// coalescing and the swap take.
func BenchmarkConvergence(b *testing.B) {
	rings := []struct {
		name string
		cfg  ring.Config
	}{
		{"default", ring.Config{}},
		{"small", ring.Config{Partitions: 271, ReplicationFactor: 20, Load: 1.25}},
	}
	for _, rc := range rings {
		for _, size := range []int{5, 20, 50, 100} {
			b.Run(fmt.Sprintf("ring=%s/N=%d", rc.name, size), func(b *testing.B) { benchConvergence(b, size, rc.cfg, 2) })
		}
	}
	// At scale (make bench-convergence): 100 nodes, 300 backends, the
	// default ring (v1: ~20 ms a cold build at 300 backends since the walk,
	// 5 ms a change) and v2.
	b.Run("ring=default/N=100/backends=300", func(b *testing.B) {
		benchConvergence(b, 100, ring.Config{}, 300)
	})
	b.Run("ring=v2/N=100/backends=300", func(b *testing.B) {
		benchConvergence(b, 100, ring.Config{Algorithm: ring.AlgorithmV2}, 300)
	})
}

// upDial is a health-check dialer whose every connect succeeds.
func upDial(context.Context, string, string) (net.Conn, error) {
	c, peer := net.Pipe()
	peer.Close()
	return c, nil
}

// buildSeconds is the node's meshlb_ring_build_seconds sum: the time its
// rebuilds have taken.
func buildSeconds(n *Node) float64 {
	var m dto.Metric
	if err := n.metrics.rebuildSeconds.Write(&m); err != nil {
		return 0
	}
	return m.GetHistogram().GetSampleSum()
}

type swapRecorder struct {
	mu    sync.Mutex
	want  func(*Table) bool
	start time.Time
	seen  []time.Duration // per node; 0 = not yet
}

func (r *swapRecorder) hook(i int) func(*Table) {
	return func(t *Table) {
		now := time.Now()
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.want != nil && r.seen[i] == 0 && r.want(t) {
			r.seen[i] = now.Sub(r.start)
		}
	}
}

// arm starts a measurement; it also counts nodes whose current table
// already satisfies want (none should, but a stale hook must not hang us).
func (r *swapRecorder) arm(want func(*Table) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.want = want
	r.start = time.Now()
	clear(r.seen)
}

func (r *swapRecorder) snapshot() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

func countZero(ds []time.Duration) int {
	n := 0
	for _, d := range ds {
		if d == 0 {
			n++
		}
	}
	return n
}

func (r *swapRecorder) done() ([]time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if slices.Contains(r.seen, 0) {
		return nil, false
	}
	return slices.Clone(r.seen), true
}

func benchConvergence(b *testing.B, size int, rcfg ring.Config, backends int) {
	rec := &swapRecorder{seen: make([]time.Duration, size)}
	nodes := make([]*Node, 0, size)
	for i := range size {
		g := gossip.DefaultConfig()
		g.BindAddr = "127.0.0.1:0"
		if i > 0 {
			g.Seeds = []string{nodes[0].GossipAddr()}
		}
		cfg := Config{
			Name: fmt.Sprintf("n%03d", i), ListenAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Gossip: g, Ring: rcfg, DrainDelay: -1, DrainSpread: -1,
			HealthPolicy: health.Policy{MaxEjectPercent: health.NoEjection}, // nobody listens at these backends
			Logger:       zerolog.New(testlog.Writer(b)).Level(zerolog.ErrorLevel),
		}
		if backends > 2 {
			// Nobody listens at these backends either: checking 300 of
			// them every second from each of 100 nodes (30,000 failed
			// connects a second, and the observations they gossip) would
			// measure health checking, not the ring. The checks succeed
			// and run hourly.
			cfg.HealthCheck = health.CheckConfig{Interval: time.Hour, Dial: upDial}
		}
		if i == 0 {
			for j := range backends {
				cfg.Backends = append(cfg.Backends, BackendSpec{ID: fmt.Sprintf("base-%d", j+1), Addr: fmt.Sprintf("127.0.0.1:%d", 9001+j)})
			}
		}
		n, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		n.swapHookForTest = rec.hook(i)
		if err := n.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { stopNode(n) })
		nodes = append(nodes, n)
	}
	waitFor(b, 300*time.Second, "mesh formed", converged(nodes, backends))
	// What the N nodes cost doing nothing (probes, acks, gossip timers):
	// on 2 shared cores it is what a change competes with.
	time.Sleep(2 * time.Second)
	idleStart, idleWall := processCPU(), time.Now()
	time.Sleep(5 * time.Second)
	idleCores := (processCPU() - idleStart).Seconds() / time.Since(idleWall).Seconds()

	var all []time.Duration
	var slowest time.Duration
	var builds []float64 // per node and iteration, seconds
	var cpu time.Duration
	before := make([]float64, size)
	iter := 0
	for b.Loop() {
		for i, n := range nodes {
			before[i] = buildSeconds(n)
		}
		cpuStart := processCPU()
		origin := nodes[(iter*7)%size]
		adding := iter%2 == 0
		iter++
		rec.arm(func(t *Table) bool { _, ok := t.Addr("moving"); return ok == adding })
		var err error
		if adding {
			_, err = origin.Cluster().Upsert("moving", "127.0.0.1:9100")
		} else {
			_, err = origin.Cluster().SetState("moving", gossip.StateRemoved)
		}
		if err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			if seen, ok := rec.done(); ok {
				if testing.Verbose() {
					slices.Sort(seen)
					b.Logf("iteration %d adding=%v: %v", iter, adding, seen)
				}
				all = append(all, seen...)
				slowest = max(slowest, slices.Max(seen))
				c := processCPU() - cpuStart
				cpu += c
				var its []float64
				for i, n := range nodes {
					its = append(its, buildSeconds(n)-before[i])
				}
				builds = append(builds, its...)
				slices.Sort(seen)
				slices.Sort(its)
				// One line per change, so that a run that fails later
				// still shows what it measured.
				b.Logf("change %d (adding=%v): converged median %v, slowest %v; build per node median %.1f ms, max %.1f ms; CPU %.2f s",
					iter, adding, seen[len(seen)/2].Round(time.Millisecond), seen[len(seen)-1].Round(time.Millisecond),
					1000*its[len(its)/2], 1000*its[len(its)-1], c.Seconds())
				break
			}
			if time.Now().After(deadline) {
				seen := rec.snapshot()
				b.Fatalf("iteration %d: %d of %d nodes converged within 60 s", iter, size-countZero(seen), size)
			}
			time.Sleep(time.Millisecond)
		}
	}
	slices.Sort(all)
	b.ReportMetric(all[len(all)/2].Seconds(), "median-s")
	b.ReportMetric(all[len(all)*99/100].Seconds(), "p99-s")
	b.ReportMetric(slowest.Seconds(), "slowest-s")
	slices.Sort(builds)
	b.ReportMetric(1000*builds[len(builds)/2], "build-ms-median")
	b.ReportMetric(1000*builds[len(builds)-1], "build-ms-max")
	b.ReportMetric(cpu.Seconds()/float64(iter), "cpu-s")
	b.ReportMetric(idleCores, "idle-cores")
	b.ReportMetric(0, "ns/op") // wall time per iteration includes the polling; the metrics above are the result
}
