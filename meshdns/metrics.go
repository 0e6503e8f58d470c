package meshdns

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	queries     *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	stale       prometheus.Gauge
	answerNodes prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_dns_queries_total", Help: "DNS queries answered, by question type and response code.",
		}, []string{"type", "rcode"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_dns_dropped_total", Help: "DNS packets not answered in full: ratelimit (dropped), ratelimit_slip (answered truncated and empty), garbage, oversized.",
		}, []string{"reason"}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshlb_dns_stale", Help: "1 while no node qualifies and DNS answers the last good set (or every known node).",
		}),
		answerNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshlb_dns_answer_nodes", Help: "Nodes in the DNS answer set.",
		}),
	}
	for _, r := range []string{"ratelimit", "ratelimit_slip", "garbage", "oversized"} {
		m.dropped.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.queries, m.dropped, m.stale, m.answerNodes} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
