package loadgen

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// histogram records durations in microseconds in log-linear buckets: exact
// below 128 µs, then 64 buckets per power of two (at most 1.6 % error),
// so a run of hours costs the same 30 KB as a run of seconds. Not safe for
// concurrent use; stats guards it.
type histogram struct {
	counts [histBuckets]int64
	n      int64
	max    int64 // exact, in µs
}

const histBuckets = 128 + 57*64

func bucketOf(us int64) int {
	if us < 0 {
		us = 0
	}
	if us < 128 {
		return int(us)
	}
	e := bits.Len64(uint64(us)) - 1 // >= 7
	sub := int(us>>(e-6)) & 63
	return 128 + (e-7)*64 + sub
}

// upperOf is the largest value that falls into bucket i.
func upperOf(i int) int64 {
	if i < 128 {
		return int64(i)
	}
	e := (i-128)/64 + 7
	sub := int64((i - 128) % 64)
	return (64+sub+1)<<(e-6) - 1
}

func (h *histogram) add(d time.Duration) {
	us := d.Microseconds()
	h.counts[bucketOf(us)]++
	h.n++
	if us > h.max {
		h.max = us
	}
}

// quantile returns the q-quantile (0 < q <= 1) in µs: the upper bound of
// the bucket holding the ceil(q·n)-th smallest value, never above max.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(upperOf(i), h.max)
		}
	}
	return h.max
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func (h *histogram) summary() Latency {
	ms := func(us int64) float64 { return math.Round(float64(us)) / 1000 }
	return Latency{Count: h.n, P50: ms(h.quantile(0.50)), P90: ms(h.quantile(0.90)), P99: ms(h.quantile(0.99)), Max: ms(h.max)}
}

// stats is the run's shared tally. One mutex: every session touches it a
// few times per WhoamiInterval, far from contention.
type stats struct {
	mu              sync.Mutex
	connectAttempts int64
	connects        int64
	reconnects      int64
	whoamis         int64
	echoes          int64
	failedOps       int64 // operations that failed, counted in errors
	errors          map[string]int64
	disconnects     map[string]int64
	hsLat, echoLat  histogram
}

func newStats() *stats {
	return &stats{errors: map[string]int64{}, disconnects: map[string]int64{}}
}

func (s *stats) connected(hs time.Duration, again bool) {
	s.mu.Lock()
	s.connectAttempts++
	s.connects++
	if again {
		s.reconnects++
	}
	s.hsLat.add(hs)
	s.mu.Unlock()
}

func (s *stats) connectFailed(kind string) {
	s.mu.Lock()
	s.connectAttempts++
	s.errors[kind]++
	s.mu.Unlock()
}

// op counts a failed operation that is not a connect: a request timeout,
// a wrong echo, a resolver failure.
func (s *stats) op(kind string) {
	s.mu.Lock()
	s.failedOps++
	s.errors[kind]++
	s.mu.Unlock()
}

func (s *stats) whoami() {
	s.mu.Lock()
	s.whoamis++
	s.mu.Unlock()
}

func (s *stats) echo(d time.Duration) {
	s.mu.Lock()
	s.echoes++
	s.echoLat.add(d)
	s.mu.Unlock()
}

func (s *stats) disconnected(err error) {
	s.mu.Lock()
	s.disconnects[disconnectKind(err)]++
	s.mu.Unlock()
}
