package meshdns

import (
	"net/netip"
	"sync"
	"time"
)

// maxClients bounds the limiter's table. Past it, new addresses share one
// bucket: a flood from spoofed sources can't grow our memory, and is
// limited as one client.
const maxClients = 16384

// verdict is what the limiter says of one response.
type verdict uint8

const (
	allow verdict = iota
	slip          // send a truncated, empty response: a real client retries over TCP
	drop
)

// limiter is response-rate limiting per client address (BIND's RRL, much
// simplified): a token bucket per address, IPv6 per /64 since one host
// holds a whole /64.
type limiter struct {
	rate, burst float64
	now         func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
	denied uint32
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: make(map[netip.Addr]*bucket)}
}

func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (l *limiter) check(a netip.Addr) verdict {
	now := l.now()
	k := clientKey(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[k]
	if !ok {
		// At most one sweep a second: under a flood of new addresses, a
		// sweep per packet would cost more than the answers.
		if len(l.buckets) >= maxClients && now.Sub(l.lastSweep) >= time.Second {
			l.lastSweep = now
			l.sweep(now)
		}
		if len(l.buckets) >= maxClients {
			b = &l.overflow
		} else {
			b = &bucket{tokens: l.burst, last: now}
			l.buckets[k] = b
		}
	}
	if b.last.IsZero() {
		b.tokens, b.last = l.burst, now
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return allow
	}
	b.denied++
	if b.denied%2 == 0 {
		return slip
	}
	return drop
}

// sweep forgets the buckets that have refilled: they are as a new client's.
func (l *limiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
}
