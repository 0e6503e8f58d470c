package ring

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
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
// Cost: one sort of the N·RF vnodes, one walk along them in the order of
// the partitions' points, and library rings whose members² sum to about
// N²/256 (+ N): at N = 1000 the library sees groups of about 4 instead of
// one ring of 1000. Three things cut that without changing a table:
//   - a group whose bound cannot bind (boundIsSlack: no backend is the
//     first vnode of more partitions than the cap) needs no library ring;
//     step 3 already gave each partition the backend the library would;
//   - a rebuild merges the vnodes that changed into the last circle
//     (circleFor) instead of hashing and sorting N·RF again, and a
//     circle does step 3 once for all the rings built from it;
//   - a group ring whose exact inputs were seen before comes from
//     groupCache (an unchanged group, another node in the process).
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

// buildV2 builds the table and returns how many group rings it did not
// need (boundIsSlack); skipSlack is false only in the test that checks
// boundIsSlack against the library.
func (r *Ring) buildV2(skipSlack bool) (slack int, err error) {
	c, err := circleFor(r.members, r.cfg.ReplicationFactor, r.seed)
	if err != nil {
		return 0, err
	}
	r.vnodeHi, r.vnodeMember = c.hi, c.owners
	n := len(r.members)
	members := make([][]uint16, v2Groups)
	for i, id := range r.members {
		g := groupOf(id, r.seed)
		members[g] = append(members[g], uint16(i))
	}
	// Hostile IDs could crowd one group; refuse what would cost more than
	// v1 is allowed to (N²·RF ≤ MaxBuildWork) rather than take minutes.
	var work float64
	for _, m := range members {
		work += float64(len(m)) * float64(len(m)) * float64(r.cfg.ReplicationFactor)
	}
	if work > MaxBuildWork {
		return 0, fmt.Errorf("ring: groups would take too long to build (Σ backends² × vnodes = %.3g > %.3g): %w: change the seed or ids",
			work, float64(MaxBuildWork), ErrInvalidBackends)
	}

	// Step 3: the first vnode clockwise from each partition's point.
	first := c.firstVnodes(r.cfg.Partitions)
	r.owners = slices.Clone(first.owners)
	parts := first.parts

	// Step 4: bounded load inside each group of two or more, at v1's cap
	// (ceil(P/N × Load), the whole ring's mean) where the group has room
	// for it, else at Load × the group's own mean.
	ids := make([]string, 0, n)
	capRing := math.Ceil(float64(int(r.parts)/n) * r.cfg.Load)
	var key []byte
	local := make([]uint16, n) // member index → index in its group
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
		for q, i := range m {
			local[i] = uint16(q)
		}
		if skipSlack && boundIsSlack(r.owners, ps, local, k, load) {
			slack++
			continue
		}
		ids = ids[:0]
		for _, i := range m {
			ids = append(ids, r.members[i])
		}
		key = appendGroupKey(key[:0], r.seed, r.cfg.ReplicationFactor, load, ids, ps)
		table, err := groupCache.getOrCompute(string(key), func() ([]uint16, int, error) {
			t, err := libraryOwners(ids, groupHasher{r.seed, ps}, len(ps), r.cfg.ReplicationFactor, load)
			return t, len(key) + 2*len(t) + 64, err
		})
		if err != nil {
			return 0, err
		}
		for q, o := range table {
			r.owners[ps[q]] = m[o]
		}
	}
	return slack, nil
}

// groupCache holds group rings' tables (a group's partition → index into
// its members), keyed by everything the library's table depends on:
// appendGroupKey. A change of backends changes the partitions of the
// groups whose vnodes neighbour the ones that came or went and, when P/N
// changes, the cap of every group; the others come from here. A ring's
// groups take about 6 bytes a partition (400 KB at the defaults).
var groupCache = newGenCache[string, []uint16](8 << 20)

// appendGroupKey encodes a group ring's inputs: the seed and RF (its
// vnodes), the load (its cap), its members in order and its partitions
// (their points and their order).
func appendGroupKey(b []byte, seed uint64, rf int, load float64, ids []string, ps []uint32) []byte {
	b = binary.LittleEndian.AppendUint64(b, seed)
	b = binary.LittleEndian.AppendUint64(b, uint64(rf))
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(load))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(ids)))
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint64(b, uint64(len(id)))
		b = append(b, id...)
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(len(ps)))
	for _, p := range ps {
		b = binary.LittleEndian.AppendUint32(b, p)
	}
	return b
}

// partitionPoints is every partition's point, ascending, and the
// partition at each.
type partitionPoints struct {
	points []uint64
	parts  []uint32
}

type pointKey struct {
	partitions int
	seed       uint64
}

// pointCache holds the sorted points per (partitions, seed): 12 bytes a
// partition, 786 KB at the defaults.
var pointCache = newGenCache[pointKey, partitionPoints](32 << 20)

// sortedPoints returns the partitions sorted by point. Two partitions
// with one point (a 64-bit collision) have one owner, whatever their
// order. The result is shared: read only.
func sortedPoints(partitions int, seed uint64) partitionPoints {
	k := pointKey{partitions, seed}
	if pp, ok := pointCache.get(k); ok {
		return pp
	}
	points, parts := make([]uint64, partitions), make([]uint32, partitions)
	for p := range points {
		points[p], parts[p] = partitionPoint(p, seed), uint32(p)
	}
	var pp partitionPoints
	pp.points, pp.parts = sortHashes(points, parts)
	pointCache.put(k, pp, 12*partitions+64)
	return pp
}

// boundIsSlack reports whether the group ring of k members over
// partitions ps (local: member index → index in the group) would give every partition to its first vnode's backend,
// the owner step 3 wrote in owners: when no backend is the first vnode of
// more partitions than the library's cap, ceil(len(ps)/len(m) × load).
// The library walks on from a partition's first vnode only when that
// backend already holds the cap; before that happens it has given out
// first-vnode partitions only, so a backend holds fewer than its count of
// them, which is at most the cap. By induction no partition ever walks on,
// and the library's table is exactly step 3's: calling it would only
// cost its N·RF vnodes. (TestV2SlackGroupsMatchLibrary checks this
// against the library.)
func boundIsSlack(owners []uint16, ps []uint32, local []uint16, k int, load float64) bool {
	limit := int(math.Ceil(float64(len(ps)/k) * load)) // the library's averageLoad
	counts := make([]int, k)
	for _, p := range ps {
		i := local[owners[p]]
		counts[i]++
		if counts[i] > limit {
			return false
		}
	}
	return true
}
