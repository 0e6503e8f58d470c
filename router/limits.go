package router

import (
	"hash/maphash"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Per-client limits, HAProxy's stick-table conn_cur and NGINX's
// limit_conn: one client address may hold at most MaxConnsPerIP proxied
// requests and WebSockets at once, and open at most HandshakeRatePerIP
// WebSockets a second (a token bucket with a burst). The address is the
// routing rule's (KeyExtractor.ClientIP: trusted proxies honoured, IPv6
// masked to the routing prefix), so a client can't dodge the limit by
// rotating privacy addresses, and clients behind a trusted proxy are
// counted apart. The check runs before a backend is picked or dialled.
//
// Memory is bounded: at most MaxTrackedIPs addresses are held, in shards
// with a lock each. A full shard evicts an address that holds no
// connection (its rate bucket is forgiven, the one thing that can be
// lost); an address holding connections is never evicted, so counts stay
// exact. Only when every tracked address of a shard holds connections,
// which MaxConns (the node's open-file budget) keeps far from 1 M, is a
// new address refused.

const limiterShards = 64

// DefaultMaxTrackedIPs bounds the limiter: about 100 bytes an address,
// some 100 MB at 1 M addresses.
const DefaultMaxTrackedIPs = 1 << 20

// Limit labels for Router.LimitedCounts and meshlb_limited_total{limit}.
const (
	LimitConnsPerIP     = "conns_per_ip"
	LimitHandshakeRate  = "handshake_rate_per_ip"
	LimitTrackerFull    = "tracker_full"
	limitKinds          = 3
	errTooManyFromIPMsg = "too many connections from this address"
)

type ipState struct {
	conns  int32
	tokens float64
	last   int64 // unix nanos of the last refill
}

type limShard struct {
	mu sync.Mutex
	m  map[netip.Addr]*ipState
}

type ipLimiter struct {
	maxConns   int32
	rate       float64 // tokens a second; 0: no rate limit
	burst      float64
	perShard   int
	seed       maphash.Seed
	shards     [limiterShards]limShard
	limited    [limitKinds]atomic.Int64
	nowForTest func() time.Time
}

func newIPLimiter(maxConns int, rate float64, burst, maxTracked int) *ipLimiter {
	if maxConns <= 0 && rate <= 0 {
		return nil
	}
	if maxTracked <= 0 {
		maxTracked = DefaultMaxTrackedIPs
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(rate)))
	}
	l := &ipLimiter{maxConns: int32(min(maxConns, math.MaxInt32)), rate: rate, burst: float64(burst),
		perShard: max(1, maxTracked/limiterShards), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]*ipState)
	}
	return l
}

func (l *ipLimiter) shard(a netip.Addr) *limShard {
	b := a.As16()
	return &l.shards[maphash.Bytes(l.seed, b[:])%limiterShards]
}

func (l *ipLimiter) now() time.Time {
	if l.nowForTest != nil {
		return l.nowForTest()
	}
	return time.Now()
}

// acquire takes a slot for a (and, for a handshake, a token). It returns
// the limit hit, "" when admitted, and how long to wait before retrying.
// An admitted call with maxConns set must be matched by release.
func (l *ipLimiter) acquire(a netip.Addr, handshake bool) (string, time.Duration) {
	now := l.now().UnixNano()
	s := l.shard(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.m[a]
	if st == nil {
		if len(s.m) >= l.perShard && !l.evictLocked(s, now) {
			return l.count(LimitTrackerFull), time.Second
		}
		st = &ipState{tokens: l.burst, last: now}
		s.m[a] = st
	}
	if l.maxConns > 0 && st.conns >= l.maxConns {
		return l.count(LimitConnsPerIP), time.Second
	}
	if handshake && l.rate > 0 {
		st.tokens = min(l.burst, st.tokens+float64(now-st.last)/1e9*l.rate)
		st.last = now
		if st.tokens < 1 {
			wait := time.Duration((1 - st.tokens) / l.rate * 1e9)
			return l.count(LimitHandshakeRate), wait
		}
		st.tokens--
	}
	if l.maxConns > 0 {
		st.conns++
	} else if l.rate > 0 && st.tokens >= l.burst {
		delete(s.m, a) // nothing to remember
	}
	return "", 0
}

func (l *ipLimiter) count(limit string) string {
	switch limit {
	case LimitConnsPerIP:
		l.limited[0].Add(1)
	case LimitHandshakeRate:
		l.limited[1].Add(1)
	default:
		l.limited[2].Add(1)
	}
	return limit
}

// release gives a's slot back. An address with no connection and a full
// bucket is forgotten at once, so the map holds only active clients and
// recent handshakers.
func (l *ipLimiter) release(a netip.Addr) {
	if l == nil || l.maxConns <= 0 {
		return
	}
	now := l.now().UnixNano()
	s := l.shard(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.m[a]
	if st == nil {
		return // not reachable: held addresses are never evicted
	}
	st.conns--
	if st.conns <= 0 && (l.rate <= 0 || l.full(st, now)) {
		delete(s.m, a)
	}
}

func (l *ipLimiter) full(st *ipState, now int64) bool {
	return st.tokens+float64(now-st.last)/1e9*l.rate >= l.burst
}

// evictLocked drops one address that holds no connection, preferring one
// whose bucket has refilled (nothing is lost then). Go's map order is
// random, so the first few entries are a random sample.
func (l *ipLimiter) evictLocked(s *limShard, now int64) bool {
	var idle netip.Addr
	probes := 0
	for a, st := range s.m {
		if st.conns > 0 {
			if probes++; probes > 64 && idle.IsValid() {
				break
			}
			continue
		}
		if l.rate <= 0 || l.full(st, now) {
			delete(s.m, a)
			return true
		}
		if !idle.IsValid() {
			idle = a
		}
		if probes++; probes > 64 {
			break
		}
	}
	if idle.IsValid() {
		delete(s.m, idle)
		return true
	}
	return false
}

// tracked is the number of addresses held, for tests.
func (l *ipLimiter) tracked() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// limitAddr is the address a request is limited by: ClientIP, IPv6 masked
// to the routing prefix.
func (e *KeyExtractor) limitAddr(r *http.Request) netip.Addr {
	a := e.ClientIP(r)
	if a.Is6() && e.ipv6Prefix < 128 {
		if p, err := a.Prefix(e.ipv6Prefix); err == nil {
			a = p.Addr()
		}
	}
	return a
}

// limitClient applies the per-client limits to req. It returns false after
// answering 429; otherwise the address holding a slot (to release when the
// request or the WebSocket ends), invalid when none is held.
func (rt *Router) limitClient(w http.ResponseWriter, req *http.Request) (netip.Addr, bool) {
	l := rt.limits
	if l == nil {
		return netip.Addr{}, true
	}
	a := rt.keys.limitAddr(req)
	if !a.IsValid() {
		return netip.Addr{}, true
	}
	limit, wait := l.acquire(a, IsWebSocketUpgrade(req))
	if limit != "" {
		if ok, dropped := rt.limitLog.Allow(); ok {
			rt.log.Warn().Str("limit", limit).Str("client", a.String()).Int64("suppressed", dropped).
				Msg("client limit reached")
		}
		secs := max(1, int(math.Ceil(wait.Seconds())))
		rt.writeError(w, req, &requestError{status: http.StatusTooManyRequests, msg: errTooManyFromIPMsg,
			header: [2]string{"Retry-After", strconv.Itoa(secs)}})
		return netip.Addr{}, false
	}
	if l.maxConns <= 0 {
		return netip.Addr{}, true
	}
	return a, true
}

// LimitedCounts returns how many requests each per-client limit refused,
// by limit label (LimitConnsPerIP, LimitHandshakeRate, LimitTrackerFull).
func (rt *Router) LimitedCounts() map[string]int64 {
	out := map[string]int64{LimitConnsPerIP: 0, LimitHandshakeRate: 0, LimitTrackerFull: 0}
	if l := rt.limits; l != nil {
		out[LimitConnsPerIP] = l.limited[0].Load()
		out[LimitHandshakeRate] = l.limited[1].Load()
		out[LimitTrackerFull] = l.limited[2].Load()
	}
	return out
}
