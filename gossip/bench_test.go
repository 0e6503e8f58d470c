package gossip

import (
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

var (
	benchRetransmit = flag.Int("bench.retransmit", 0, "RetransmitMult for BenchmarkConvergence (0: default)")
	benchGossip     = flag.Duration("bench.gossip", 0, "GossipInterval for BenchmarkConvergence (0: default)")
	benchNodes      = flag.Int("bench.fanout", 0, "GossipNodes for BenchmarkConvergence (0: default)")
	benchBurst      = flag.Int("bench.burst", 1, "upserts per op, on different members at once, for BenchmarkConvergence")
)

// BenchmarkConvergence measures, with the production timers on loopback,
// the time from an Upsert on one member until every member holds it. It
// reports the median and the maximum over the iterations, and how many
// digest repairs each op needed (-bench.burst sets the upserts per op);
// run it with
// -benchtime=Nx, e.g.
//
//	go test -run '^$' -bench Convergence -benchtime 30x ./gossip/
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{5, 20, 50} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchConvergence(b, n) })
	}
}

func benchConvergence(b *testing.B, n int) {
	cs := make([]*Cluster, n)
	for i := range n {
		cfg := DefaultConfig()
		cfg.Name = fmt.Sprintf("b%03d", i)
		cfg.BindAddr = "127.0.0.1:0"
		cfg.Logger = zerolog.Nop()
		if i > 0 {
			cfg.Seeds = []string{cs[0].GossipAddr()}
		}
		if *benchRetransmit > 0 {
			cfg.RetransmitMult = *benchRetransmit
		}
		if *benchGossip > 0 {
			cfg.GossipInterval = *benchGossip
		}
		if *benchNodes > 0 {
			cfg.GossipNodes = *benchNodes
		}
		cs[i] = startCluster(b, cfg, nil)
	}
	waitMembers(b, cs, n, 60*time.Second)

	repairs := func() (sum float64) {
		for _, c := range cs {
			sum += counterValue(c.m.syncs.WithLabelValues("digest"))
		}
		return sum
	}
	repairsBefore := repairs()
	var times []time.Duration
	iter := 0
	for b.Loop() {
		start := time.Now()
		var ids []string
		for range max(1, *benchBurst) {
			id := fmt.Sprintf("k%d", iter)
			if _, err := cs[iter%n].Upsert(id, "10.0.0.1:80"); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, id)
			iter++
		}
		pending := slices.Clone(cs)
		for len(pending) > 0 {
			pending = slices.DeleteFunc(pending, func(c *Cluster) bool {
				for _, id := range ids {
					if _, ok := c.catalogGet(id); !ok {
						return false
					}
				}
				return true
			})
			if time.Since(start) > 30*time.Second {
				b.Fatalf("an update did not reach %d members in 30 s", len(pending))
			}
			time.Sleep(time.Millisecond)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	b.ReportMetric(times[len(times)/2].Seconds(), "median-s")
	b.ReportMetric(times[len(times)-1].Seconds(), "max-s")
	// Push/pulls started by a digest mismatch: each is a member that gossip
	// alone did not reach in time (a lost or late delta).
	b.ReportMetric((repairs()-repairsBefore)/float64(len(times)), "repairs/op")
	b.ReportMetric(0, "ns/op")
}
