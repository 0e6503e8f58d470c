package ring

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The v2 ("grouped") ring.
//
// The library builds a ring of n members in about n²·RF/2·log(n·RF)
// steps, because New re-sorts every vnode after each member it adds: at
// 1000 backends and RF 1000 that is 50 s. v2 keeps v1's circle and never
// hands the library more than one small group of backends:
//
//  1. The circle. Every backend has RF vnodes named and hashed exactly as
//     v1 names them; a partition's point is the hash the library gives it.
//  2. Groups. A backend's group is xxh64("group" + id) % 256, a function
//     of its own ID, so a join or leave changes one group and no other.
//  3. Which group. A partition belongs to the group of the first vnode
//     clockwise from its point: plain consistent hashing, which is where
//     the library's own walk starts.
//  4. Which backend. Each group with two or more backends gets one
//     library ring (bounded load) over its backends and exactly the
//     partitions of step 3, at the same points: its hasher places the
//     library's partition q at the point of the group's q-th partition.
//     The library's walk therefore starts at the same vnode as step 3 and
//     only moves on when that backend is full. The group ring's load is
//     set so that its cap is v1's, ceil(P/N × Load) (Load × the whole
//     ring's mean), when the group has room for that, else Load × the
//     group's own mean; overflow stays inside the group. (Capping at the
//     group's mean instead left max/mean at 1.17 at N = 100, where v1 has
//     1.11.) A group of one owns its partitions outright, uncapped.
//
// A join adds the new backend's vnodes: the partitions whose first vnode
// becomes one of them move to its group, where the library's walk starts
// at the new backend: it gets them unless it is full. So v2 moves about
// what v1 moves; the caps differ (per group instead of per ring), and so
// do the few partitions that overflow.
//
// Cost: one sort of the N·RF vnodes, one binary search per partition, and
// library rings whose members² sum to about N²/256 (+ N): at N = 1000 the
// library sees groups of about 4 instead of one ring of 1000.
const v2Groups = 256

// groupDomain separates a backend's group hash from its vnode hashes.
const groupDomain = "meshlb/ring/v2/group\x00"

// groupOf returns the group of id.
func groupOf(id string, seed uint64) int {
	return int(sum64String(groupDomain+id, seed) % v2Groups)
}

// groupHasher is the hasher of one group's library ring: vnode names hash
// as everywhere else, and the library's partition q (an 8-byte
// little-endian ID) hashes to the point of the group's q-th partition.
// Vnode names can't pass for a partition ID: they end in a decimal digit,
// and a partition ID below 2^56 ends in a zero byte.
type groupHasher struct {
	seed  uint64
	parts []uint32 // the group's partitions, ascending
}

// Sum64 implements consistent.Hasher.
func (h groupHasher) Sum64(b []byte) uint64 {
	if len(b) == 8 && b[7] == 0 {
		if q := binary.LittleEndian.Uint64(b); q < uint64(len(h.parts)) {
			return partitionPoint(int(h.parts[q]), h.seed)
		}
	}
	return sum64(b, h.seed)
}

// partitionPoint is the point of partition p on the circle: the hash the
// library gives a partition ID (8 bytes, little-endian).
func partitionPoint(p int, seed uint64) uint64 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(p))
	return sum64(b[:], seed)
}

// checkRoomV2 is what CheckCapacity can check from the number of backends
// alone; Build checks each group's ring (fitsGroup).
func checkRoomV2(cfg Config, n int) error {
	if n > V2MaxMembers {
		return fmt.Errorf("ring: %d backends: %w: the v2 algorithm takes at most %d", n, ErrInvalidBackends, V2MaxMembers)
	}
	if n > cfg.Partitions {
		return fmt.Errorf("ring: %d backends exceed %d partitions: %w", n, cfg.Partitions, ErrInvalidBackends)
	}
	return nil
}

// fitsGroup mirrors, for a group ring of k members and p partitions, the
// library's "not enough room to distribute partitions" panic (see
// checkRoom). A group that fails it keeps its consistent-hash owners
// without a cap: it happens only to a group with fewer partitions than
// members, or with Load 1 and p not a multiple of k.
func fitsGroup(load float64, k, p int) bool {
	return k <= p && float64(k)*math.Ceil(float64(p/k)*load) >= float64(p)
}

func (r *Ring) buildV2() error {
	hashes, vm, err := vnodeCircle(r.members, r.cfg.ReplicationFactor, r.seed)
	if err != nil {
		return err
	}
	r.keepCircle(hashes, vm)
	n := len(r.members)
	groupOfMember := make([]uint8, n)
	members := make([][]uint16, v2Groups)
	for i, id := range r.members {
		g := groupOf(id, r.seed)
		groupOfMember[i] = uint8(g)
		members[g] = append(members[g], uint16(i))
	}
	// Hostile IDs could crowd one group; refuse what would cost more than
	// v1 is allowed to (N²·RF ≤ MaxBuildWork) rather than take minutes.
	var work float64
	for _, m := range members {
		work += float64(len(m)) * float64(len(m)) * float64(r.cfg.ReplicationFactor)
	}
	if work > MaxBuildWork {
		return fmt.Errorf("ring: groups would take too long to build (Σ backends² × vnodes = %.3g > %.3g): %w: change the seed or ids",
			work, float64(MaxBuildWork), ErrInvalidBackends)
	}

	// Steps 3: the first vnode clockwise from each partition's point.
	r.owners = make([]uint16, r.parts)
	parts := make([][]uint32, v2Groups)
	total := len(hashes)
	for p := range r.owners {
		pt := partitionPoint(p, r.seed)
		// The library's sort.Search: the first vnode ≥ the point, or the
		// first of the circle.
		lo, hi := 0, total
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if hashes[mid] < pt {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		if lo == total {
			lo = 0
		}
		m := vm[lo]
		r.owners[p] = m
		if g := groupOfMember[m]; len(members[g]) > 1 {
			parts[g] = append(parts[g], uint32(p))
		}
	}

	// Step 4: bounded load inside each group of two or more, at v1's cap
	// (ceil(P/N × Load), the whole ring's mean) where the group has room
	// for it, else at Load × the group's own mean.
	ids := make([]string, 0, n)
	capRing := math.Ceil(float64(int(r.parts)/n) * r.cfg.Load)
	for g, m := range members {
		ps := parts[g]
		k := len(m)
		if k < 2 || !fitsGroup(r.cfg.Load, k, len(ps)) {
			continue
		}
		load := r.cfg.Load
		if mean := len(ps) / k; float64(k)*capRing >= float64(len(ps)) {
			// The library's cap is ceil(mean × load): (capRing - ½)/mean
			// gives exactly capRing (a product and a ceiling, the same
			// in IEEE arithmetic everywhere).
			load = (capRing - 0.5) / float64(mean)
		}
		ids = ids[:0]
		for _, i := range m {
			ids = append(ids, r.members[i])
		}
		local, err := libraryOwners(ids, groupHasher{r.seed, ps}, len(ps), r.cfg.ReplicationFactor, load)
		if err != nil {
			return err
		}
		for q, o := range local {
			r.owners[ps[q]] = m[o]
		}
	}
	return nil
}
