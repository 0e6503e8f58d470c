package node

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshlb/meshlb/router"
)

// observer is what a node keeps to show its traffic: the metrics below,
// the access log, the load summary it gossips, the events and rates of
// the dashboard. It is fed by the router's hooks, which run on the
// request path or at a session's end, never per frame: each does a few
// atomic adds, a histogram observation and a non-blocking send.
type observer struct {
	handshakes       *prometheus.CounterVec
	handshakeSeconds prometheus.Histogram
	closed           *prometheus.CounterVec
	requests         *prometheus.CounterVec
	requestSeconds   prometheus.Histogram

	// Totals for the load summary's rates (mesh_summary.go).
	handshakeCount atomic.Int64
	requestCount   atomic.Int64
	errorCount     atomic.Int64 // failed handshakes and 5xx answers

	access *accessLog      // nil when off
	ctx    context.Context // the node's run context, once started: ends the dashboard's streams
	events *eventLog
	rates  *rateHistory
}

// latencyBuckets span a handshake or request through a proxy: from a
// loopback backend to a slow one near the timeouts.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newObserver(reg prometheus.Registerer) *observer {
	o := &observer{
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_ws_handshakes_total",
			Help: "WebSocket handshakes by backend and result: ok (101 relayed), rejected (the backend's non-101 answer passed on), error (502/503/504; backend \"none\" when none was reached).",
		}, []string{"backend", "result"}),
		handshakeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshlb_ws_handshake_seconds", Help: "From a client's upgrade request to the answer relayed (failover included).", Buckets: latencyBuckets,
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_ws_closed_total",
			Help: "WebSocket sessions ended, by backend and the close code the client got (1005 none in the frame, 1006 no close frame; 3xxx, 4xxx application ranges).",
		}, []string{"backend", "code"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshlb_http_requests_total", Help: "Plain HTTP requests by backend (\"none\" when none was reached) and status class (2xx..5xx).",
		}, []string{"backend", "code_class"}),
		requestSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshlb_http_request_seconds", Help: "Plain HTTP requests, from the request to the end of the answer.", Buckets: latencyBuckets,
		}),
		events: newEventLog(eventLogSize),
		rates:  newRateHistory(rateSamples),
	}
	reg.MustRegister(o.handshakes, o.handshakeSeconds, o.closed, o.requests, o.requestSeconds)
	return o
}

// trafficCollector reports what the router counts itself, at scrape
// time: the sessions open per backend, bytes, failovers.
type trafficCollector struct{ rt *router.Router }

var (
	sessionsDesc = prometheus.NewDesc("meshlb_ws_sessions",
		"WebSocket sessions open now, by backend.", []string{"backend"}, nil)
	bytesDesc = prometheus.NewDesc("meshlb_bytes_total",
		"Bytes relayed by backend and direction: in (client to backend) and out (backend to client), WebSocket and HTTP bodies; open sessions included.",
		[]string{"backend", "direction"}, nil)
	failoversDesc = prometheus.NewDesc("meshlb_failovers_total",
		"Handshakes and requests that left this backend for the next candidate.", []string{"backend"}, nil)
)

func (c trafficCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- bytesDesc
	ch <- failoversDesc
}

func (c trafficCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.rt.Traffic(true) {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(t.Sessions), t.Backend)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(t.BytesIn), t.Backend, "in")
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(t.BytesOut), t.Backend, "out")
		ch <- prometheus.MustNewConstMetric(failoversDesc, prometheus.CounterValue, float64(t.Failovers), t.Backend)
	}
}

// hook installs the observer's hooks in rcfg, after any the caller set.
func (o *observer) hook(rcfg *router.Config, node string) {
	onHS, onSess, onReq := rcfg.OnHandshake, rcfg.OnSessionEnd, rcfg.OnRequestEnd
	rcfg.OnHandshake = func(backend, result string, d time.Duration) {
		o.handshakeCount.Add(1)
		if result == router.HandshakeError {
			o.errorCount.Add(1)
		}
		o.handshakes.WithLabelValues(orNone(backend), result).Inc()
		o.handshakeSeconds.Observe(d.Seconds())
		if onHS != nil {
			onHS(backend, result, d)
		}
	}
	rcfg.OnSessionEnd = func(s *router.SessionEnd) {
		o.closed.WithLabelValues(s.Backend, router.CloseCodeLabel(s.CloseCode)).Inc()
		if o.access != nil {
			o.access.session(node, s)
		}
		if onSess != nil {
			onSess(s)
		}
	}
	rcfg.OnRequestEnd = func(r *router.RequestEnd) {
		// A failed upgrade is counted as a handshake already; it only
		// gets its access log line here.
		if !r.Upgrade {
			o.requestCount.Add(1)
			if r.Status >= 500 {
				o.errorCount.Add(1)
			}
			o.requests.WithLabelValues(orNone(r.Backend), codeClass(r.Status)).Inc()
			o.requestSeconds.Observe(r.Duration.Seconds())
		}
		if o.access != nil {
			o.access.request(node, r)
		}
		if onReq != nil {
			onReq(r)
		}
	}
}

func orNone(backend string) string {
	if backend == "" {
		return "none"
	}
	return backend
}

var codeClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// codeClass is the status class label; a status outside 100-599 (no
// server sends one) counts as 5xx.
func codeClass(status int) string {
	if status < 100 || status > 599 {
		return "5xx"
	}
	return codeClasses[status/100-1]
}
