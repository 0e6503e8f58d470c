package gossip

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are created for every Cluster and registered only when
// Config.Registerer is set, so the code never branches on them.
type metrics struct {
	sent        *prometheus.CounterVec // by type: record, state, ack
	received    *prometheus.CounterVec // by type
	rejected    *prometheus.CounterVec // by reason
	relayed     prometheus.Counter
	syncs       *prometheus.CounterVec // by reason: digest, rejoin, join
	syncErrors  *prometheus.CounterVec // by reason
	members     prometheus.Gauge
	records     *prometheus.GaugeVec // by state
	propagation prometheus.Histogram
	logLines    *prometheus.CounterVec // by level
	// logRejected counts the packets and streams memberlist refused, by
	// reason (see memberlistReject).
	logRejected *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_gossip_messages_sent_total",
			Help: "Gossip messages of ours handed to memberlist, by type (record broadcast, full state, ack digest).",
		}, []string{"type"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_gossip_messages_received_total",
			Help: "Valid gossip messages received, by type.",
		}, []string{"type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_gossip_messages_rejected_total",
			Help: "Gossip messages rejected as garbage, truncated, oversized or of another version, by reason.",
		}, []string{"reason"}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshlb_gossip_records_relayed_total",
			Help: "Catalog records re-broadcast on first sight.",
		}),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_gossip_anti_entropy_syncs_total",
			Help: "Push/pull exchanges started by us, by reason (join, rejoin, digest mismatch).",
		}, []string{"reason"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_gossip_anti_entropy_sync_errors_total",
			Help: "Push/pull exchanges started by us that failed, by reason.",
		}, []string{"reason"}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshlb_gossip_members",
			Help: "Live mesh members known to this node, itself included.",
		}),
		records: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshlb_gossip_catalog_records",
			Help: "Backend records in the catalog, by admin state (removed are tombstones).",
		}, []string{"state"}),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "meshlb_gossip_propagation_delay_seconds",
			Help:    "Time from a catalog write (its version's clock) to its first sight here.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		logLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_gossip_memberlist_log_lines_total",
			Help: "Log lines written by memberlist, by level.",
		}, []string{"level"}),
		logRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_gossip_rejected_total",
			Help: "Packets and streams memberlist refused (bad key, garbage, truncated, wrong label), by reason.",
		}, []string{"reason"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{
		m.sent, m.received, m.rejected, m.relayed, m.syncs, m.syncErrors,
		m.members, m.records, m.propagation, m.logLines, m.logRejected,
	} {
		errs = append(errs, reg.Register(c))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return m, nil
}
