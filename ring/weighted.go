package ring

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

// Weights. A backend's weight scales both its vnodes and its load bound, so
// its share of keys follows its weight and the bound still caps it relative
// to that share (HAProxy's and NGINX's weight=, on a consistent ring).
const (
	DefaultWeight = 1
	MaxWeight     = 100
	// MaxWeightedVnodes bounds Σ weight × ReplicationFactor: the circle
	// costs 6 bytes a vnode kept and 10 while it is built.
	MaxWeightedVnodes = MaxVnodes
	// weightedVnodes is the vnodes per weight unit, in ReplicationFactors:
	// a weight-1 backend beside heavier ones has few vnodes and its share
	// varies as 1/√vnodes. At 1 it missed 1:2:3:4 by up to 5.9 % over 30
	// sets of IDs, at 4 by 3.7 % (TestWeightedShares).
	weightedVnodes = 4
)

// ValidateWeight checks one backend weight.
func ValidateWeight(w int) error {
	if w < 1 || w > MaxWeight {
		return fmt.Errorf("weight %d: %w: want 1 to %d", w, ErrInvalidBackends, MaxWeight)
	}
	return nil
}

// BuildWeighted is Build with a weight per backend: weights[id], absent
// meaning DefaultWeight. With every weight 1 it is Build exactly (same
// table, same fingerprint), so a mesh that never sets a weight keeps its
// placement. Otherwise, on v1, backend i gets 4 × ReplicationFactor × w_i
// vnodes (named as its unweighted ones, so changing
// one weight only adds or removes that backend's vnodes) and owns at most
// ceil(Partitions × w_i/Σw × Load) partitions, walked clockwise as the
// library walks. The walk is the same on v2: v2's per-group library rings
// apply one equal bound inside each group, which would cap a heavy
// backend at its group's mean, so a weighted ring never uses them, and
// the walk costs one pass over the partitions at any size.
func BuildWeighted(cfg Config, ids []string, weights map[string]int) (*Ring, error) {
	weighted := false
	for _, id := range ids {
		w, ok := weights[id]
		if !ok {
			continue
		}
		if err := ValidateWeight(w); err != nil {
			return nil, fmt.Errorf("ring: backend %q: %w", id, err)
		}
		weighted = weighted || w != DefaultWeight
	}
	if !weighted {
		return Build(cfg, ids)
	}
	cfg = cfg.WithDefaults()
	r, err := newRing(cfg, ids)
	if err != nil {
		return nil, err
	}
	// The library's room and build-cost checks don't apply to the
	// weighted walk, whose bounds always hold every partition; a
	// partition per backend at least still must.
	if n := len(r.members); n > cfg.Partitions {
		return nil, fmt.Errorf("ring: %d backends exceed %d partitions: %w", n, cfg.Partitions, ErrInvalidBackends)
	}
	r.weights = make([]int, len(r.members))
	total := 0
	for i, id := range r.members {
		w := DefaultWeight
		if v, ok := weights[id]; ok {
			w = v
		}
		r.weights[i] = w
		total += w
	}
	if v := total * cfg.ReplicationFactor * weightedVnodes; v > MaxWeightedVnodes {
		return nil, fmt.Errorf("ring: Σ weight × 4 × vnodes = %d: %w: at most %d; lower weights or the replication factor", v, ErrInvalidBackends, MaxWeightedVnodes)
	}
	hashes, vm, err := weightedCircle(r.members, r.weights, cfg.ReplicationFactor, r.seed)
	if err != nil {
		return nil, err
	}
	r.keepCircle(hashes, vm)
	r.owners = weightedOwners(hashes, vm, r.weights, total, cfg.Partitions, cfg.Load, r.seed)
	r.fp = r.fingerprint()
	return r, nil
}

// weightedCircle is vnodeCircle with weightedVnodes × rf × weights[i] vnodes for member i,
// named as the library names them.
func weightedCircle(members []string, weights []int, rf int, seed uint64) ([]uint64, []uint16, error) {
	total := 0
	for _, w := range weights {
		total += w * rf
	}
	hashes := make([]uint64, 0, total)
	owners := make([]uint16, 0, total)
	var buf []byte
	for i, id := range members {
		for j := range rf * weights[i] * weightedVnodes {
			buf = append(buf[:0], id...)
			buf = append(buf, terminator...)
			buf = strconv.AppendInt(buf, int64(j), 10)
			hashes = append(hashes, sum64(buf, seed))
			owners = append(owners, uint16(i))
		}
	}
	radixSort(hashes, owners)
	for i := 1; i < len(hashes); i++ {
		if hashes[i] == hashes[i-1] {
			a, b := min(owners[i-1], owners[i]), max(owners[i-1], owners[i])
			return nil, nil, fmt.Errorf("ring: vnodes of %q and %q collide at hash %#x: %w: change the seed or an id",
				members[a], members[b], hashes[i], ErrInvalidBackends)
		}
	}
	return hashes, owners, nil
}

// weightedOwners assigns partitions in order, each to the first vnode
// clockwise from its point whose member is under its bound, as the
// library's distributeWithLoad does with one bound for all. The bounds add
// up to at least Partitions × Load ≥ Partitions, so the walk always ends.
func weightedOwners(hashes []uint64, vm []uint16, weights []int, total, partitions int, load float64, seed uint64) []uint16 {
	caps := make([]int, len(weights))
	for i, w := range weights {
		caps[i] = int(math.Ceil(float64(partitions) * float64(w) / float64(total) * load))
	}
	loads := make([]int, len(weights))
	owners := make([]uint16, partitions)
	n := len(hashes)
	for p := range owners {
		pt := partitionPoint(p, seed)
		idx := searchUint64(hashes, pt)
		for {
			if idx >= n {
				idx = 0
			}
			m := vm[idx]
			if loads[m] < caps[m] {
				loads[m]++
				owners[p] = m
				break
			}
			idx++
		}
	}
	return owners
}

// searchUint64 is the index of the first hash ≥ x (len(a) if none).
func searchUint64(a []uint64, x uint64) int {
	lo, hi := 0, len(a)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if a[m] < x {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Weight returns a backend's weight on r (DefaultWeight for an unweighted
// ring, 0 for a backend not on it).
func (r *Ring) Weight(id string) int {
	if r == nil {
		return 0
	}
	i, ok := r.memberIndex(id)
	if !ok {
		return 0
	}
	if r.weights == nil {
		return DefaultWeight
	}
	return r.weights[i]
}

func (r *Ring) memberIndex(id string) (int, bool) {
	lo, hi := 0, len(r.members)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.members[m] < id {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(r.members) && r.members[lo] == id
}

const weightDomain = "meshlb/ring/weights/v1\x00"

// hashWeights adds the weights to a weighted ring's fingerprint; an
// unweighted ring's fingerprint stays what it always was.
func (r *Ring) hashWeights(h interface{ Write([]byte) (int, error) }) {
	if r.weights == nil {
		return
	}
	h.Write([]byte(weightDomain))
	var b [8]byte
	for _, w := range r.weights {
		binary.LittleEndian.PutUint64(b[:], uint64(w))
		h.Write(b[:])
	}
}

// CheckWeightedCapacity reports whether backends of totalWeight (Σ weight)
// fit cfg's vnode budget, without building: the admin API refuses a weight
// that would leave every node unable to rebuild.
func CheckWeightedCapacity(cfg Config, totalWeight int) error {
	cfg = cfg.WithDefaults()
	if v := totalWeight * cfg.ReplicationFactor * weightedVnodes; v > MaxWeightedVnodes {
		return fmt.Errorf("ring: Σ weight × 4 × vnodes = %d: %w: at most %d; lower weights or the replication factor", v, ErrInvalidBackends, MaxWeightedVnodes)
	}
	return nil
}
