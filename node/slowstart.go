package node

import (
	"math"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Slow start (HAProxy's slowstart, Envoy's slow start): a backend written
// into the catalog (added, re-added, undrained) takes over the keys the
// ring gives it gradually. Over SlowStart after its record's replicated
// time, the fraction f of elapsed time rises from 0 to 1, and a key goes
// to it only once the key's place in a fixed per-key order, u in [0, 1),
// is below f; until then the key stays with the ring's next candidate, in
// practice where it was before. Every node computes this from the same
// record time and the same ring, so routing agrees mesh-wide (up to the
// nodes' clock skew at the instant a key crosses), and a key that moved
// never moves back while the ramp rises.

// rampExtra is how many candidates beyond the ones asked for the picker
// looks at, so that keys of several backends ramping together still find
// one that takes them.
const rampExtra = 3

// rampFraction is how far backend id is through its ramp at now: 1 when
// slow start is off or the ramp is over.
func (t *PoolTable) rampFraction(id string, d time.Duration, now time.Time) float64 {
	if d <= 0 {
		return 1
	}
	since, ok := t.since[id]
	if !ok {
		return 1
	}
	e := now.Sub(since)
	if e >= d {
		return 1
	}
	return math.Max(0, float64(e)/float64(d))
}

// keyOrder is key's place, in [0, 1), in backend id's order of keys.
func keyOrder(key []byte, id string) float64 {
	h := xxhash.Sum64(key) ^ (xxhash.Sum64String(id) * 0x9e3779b97f4a7c15)
	// splitmix64's finalizer: the xor alone would keep key hashes' order.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return float64(h>>11) / (1 << 53)
}

// rampOrder moves to the front the first candidate that takes key under
// the ramp (ids is the ring's order) and reports whether the ramp changed
// the choice. If none takes it, the ring's owner does.
func (t *PoolTable) rampOrder(key []byte, ids []string, d time.Duration, now time.Time) ([]string, bool) {
	if d <= 0 || len(ids) == 0 {
		return ids, false
	}
	for i, id := range ids {
		if f := t.rampFraction(id, d, now); f >= 1 || keyOrder(key, id) < f {
			if i == 0 {
				return ids, false
			}
			out := make([]string, 0, len(ids))
			out = append(out, id)
			out = append(out, ids[:i]...)
			return append(out, ids[i+1:]...), true
		}
	}
	return ids, false
}
