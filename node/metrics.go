package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshlb/meshlb/gossip"
)

type metrics struct {
	rebuilds       *prometheus.CounterVec
	rebuildSeconds prometheus.Histogram
	changeToRing   prometheus.Histogram
	backends       *prometheus.GaugeVec
}

// convergenceBuckets span what a mesh can take to converge, from a quick
// local rebuild to a slow repair.
var convergenceBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	m := &metrics{
		rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_ring_rebuilds_total", Help: "Ring rebuilds by result (ok, error).",
		}, []string{"result"}),
		rebuildSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshlb_ring_build_seconds", Help: "Time to build a ring.", Buckets: convergenceBuckets,
		}),
		changeToRing: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshlb_ring_change_to_swap_seconds", Help: "From the first gossip change of a burst to the new ring in use (coalescing plus build).", Buckets: convergenceBuckets,
		}),
		backends: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshlb_backends", Help: "Backends in the catalog by admin state.",
		}, []string{"state"}),
	}
	for _, st := range []gossip.State{gossip.StateActive, gossip.StateDraining, gossip.StateRemoved} {
		m.backends.WithLabelValues(st.String())
	}
	reg.MustRegister(
		m.rebuilds, m.rebuildSeconds, m.changeToRing, m.backends,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshlb_members", Help: "Live nodes in the mesh, this one included."},
			func() float64 { return float64(len(n.cluster.Members())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshlb_ring_backends", Help: "Backends on the ring in use."},
			func() float64 {
				if t := n.table.Load(); t != nil {
					return float64(t.Ring.Len())
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshlb_ring_fingerprint", Help: "Low 52 bits of the ring fingerprint (exact in a float64), to compare across nodes."},
			func() float64 {
				if t := n.table.Load(); t != nil {
					return float64(t.Fingerprint & (1<<52 - 1))
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshlb_ring_agreement", Help: "1 when every live member reports this node's ring fingerprint."},
			func() float64 { return b2f(n.Status().RingAgreed) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshlb_config_agreement", Help: "1 when every live member reports this node's config fingerprint."},
			func() float64 { return b2f(n.Status().ConfigAgreed) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshlb_ready", Help: "1 when the node is ready for traffic."},
			func() float64 { ok, _ := n.Ready(); return b2f(ok) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

func (m *metrics) observeCatalog(records []gossip.Record) {
	counts := map[gossip.State]int{}
	for _, r := range records {
		counts[r.State]++
	}
	for _, st := range []gossip.State{gossip.StateActive, gossip.StateDraining, gossip.StateRemoved} {
		m.backends.WithLabelValues(st.String()).Set(float64(counts[st]))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
