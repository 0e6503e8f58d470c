package node

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	rebuilds       *prometheus.CounterVec
	rebuildSeconds prometheus.Histogram
	changeToRing   prometheus.Histogram
	// backendFailures counts connections to a backend that failed before a
	// response: the passive health observations.
	backendFailures *prometheus.CounterVec
	// acceptErrors counts failed accepts by listener and reason (see
	// acceptErrorReason).
	acceptErrors *prometheus.CounterVec
	// proxyErrors counts the 502/503/504 the router answered itself, by
	// status and reason: what a backend answered is not in it.
	proxyErrors *prometheus.CounterVec
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
		backendFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_backend_connect_failures_total", Help: "Connections to a backend that failed before it answered (passive health).",
		}, []string{"backend"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_accept_errors_total", Help: "Failed accepts on the proxy and admin listeners, by reason (fd_limit: answered 503 on the reserve descriptor).",
		}, []string{"listener", "reason"}),
		proxyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_proxy_errors_total", Help: "502, 503 and 504 answered by the node itself (not relayed from a backend), by status and reason.",
		}, []string{"status", "reason"}),
	}
	reg.MustRegister(
		m.rebuilds, m.rebuildSeconds, m.changeToRing, m.backendFailures, m.acceptErrors, m.proxyErrors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshlb_websockets", Help: "Proxied WebSockets open now."},
			func() float64 { return float64(n.router.ActiveWebSockets()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshlb_affinity_cookies_ignored_total", Help: "Affinity cookies not honoured, by reason: invalid (forged, expired, foreign) or backend_gone (no longer on the ring).", ConstLabels: prometheus.Labels{"reason": "invalid"}},
			func() float64 { return float64(n.router.AffinityRejected()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshlb_affinity_cookies_ignored_total", Help: "Affinity cookies not honoured, by reason: invalid (forged, expired, foreign) or backend_gone (no longer on the ring).", ConstLabels: prometheus.Labels{"reason": "backend_gone"}},
			func() float64 { return float64(n.router.AffinityGone()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshlb_ws_write_timeouts_total", Help: "WebSockets closed because the client or backend took no byte for --ws-write-timeout."},
			func() float64 { return float64(n.router.WSWriteTimeouts()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshlb_ws_client_frame_errors_total", Help: "WebSockets closed for a client frame that was unmasked (1002) or over --ws-max-frame-size (1009)."},
			func() float64 { return float64(n.router.WSClientFrameErrors()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshlb_ring_backends", Help: "Backends on the rings in use, every pool's."},
			func() float64 {
				if t := n.table.Load(); t != nil {
					return float64(t.Backends())
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
		healthCollector{n},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// healthCollector reports the backends' states at scrape time, from the
// replicated state, so it never drifts from what /v1/backends shows.
type healthCollector struct{ n *Node }

var (
	backendStateDesc = prometheus.NewDesc("meshlb_backend_state",
		"1 for the backend's effective state: active (on the ring), draining, unhealthy (out for health) or removed.",
		[]string{"backend", "state"}, nil)
	backendLocalUpDesc = prometheus.NewDesc("meshlb_backend_local_up",
		"This node's own check of the backend: 1 up, 0 down (its vote; the ring follows the quorum).",
		[]string{"backend"}, nil)
	healthEjectedDesc = prometheus.NewDesc("meshlb_health_ejected_backends",
		"Active backends out of the ring for health.", nil, nil)
	healthMaxEjectedDesc = prometheus.NewDesc("meshlb_health_max_ejected_backends",
		"The ejection budget: most active backends that may be out for health.", nil, nil)
	healthOverBudgetDesc = prometheus.NewDesc("meshlb_health_over_budget_backends",
		"Backends a quorum sees down that the ejection budget keeps in the ring. Alert on > 0.", nil, nil)
	healthChecksDesc = prometheus.NewDesc("meshlb_health_checks_total",
		"Health check results of this node (active and passive), by result: ok, failed, abstained (failed for this node's own sake, not counted).", []string{"result"}, nil)
)

func (c healthCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{backendStateDesc, backendLocalUpDesc, healthEjectedDesc, healthMaxEjectedDesc, healthOverBudgetDesc, healthChecksDesc} {
		ch <- d
	}
}

func (c healthCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	verdicts := replicaVerdicts(n.cluster)
	for _, rec := range n.cluster.Records() {
		st := effectiveState(rec, verdicts[rec.ID])
		for _, s := range effectiveStates {
			ch <- prometheus.MustNewConstMetric(backendStateDesc, prometheus.GaugeValue, b2f(s == st), rec.ID, s)
		}
		if v := n.checker.View(rec.ID); v.Checked {
			ch <- prometheus.MustNewConstMetric(backendLocalUpDesc, prometheus.GaugeValue, b2f(v.Up), rec.ID)
		}
	}
	hs := n.healthStatus()
	ch <- prometheus.MustNewConstMetric(healthEjectedDesc, prometheus.GaugeValue, float64(hs.Ejected))
	ch <- prometheus.MustNewConstMetric(healthMaxEjectedDesc, prometheus.GaugeValue, float64(hs.MaxEjected))
	ch <- prometheus.MustNewConstMetric(healthOverBudgetDesc, prometheus.GaugeValue, float64(len(hs.OverBudget)))
	checks, failures := n.checker.Counts()
	ch <- prometheus.MustNewConstMetric(healthChecksDesc, prometheus.CounterValue, float64(checks-failures), "ok")
	ch <- prometheus.MustNewConstMetric(healthChecksDesc, prometheus.CounterValue, float64(failures), "failed")
	// Failed for this node's sake (out of descriptors, starved): no vote.
	ch <- prometheus.MustNewConstMetric(healthChecksDesc, prometheus.CounterValue, float64(n.checker.Abstained()), "abstained")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
