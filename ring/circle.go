package ring

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"strconv"
	"sync"
)

// circle is the vnode circle the library builds for a set of members:
// the same names, the same hasher; hashes ascending, the member index of
// each, and their high 32 bits (what a ring keeps for Candidates). It is
// shared by every ring built from the same members, seed and RF, and
// never modified; firsts only memoizes a function of it.
type circle struct {
	seed    uint64
	rf      int
	members []string // sorted
	hashes  []uint64
	owners  []uint16
	hi      []uint32

	mu     sync.Mutex
	firsts map[int]*firstVnodes // by partition count
}

// firstVnodes is step 3 of v2 (grouped.go) for one circle and partition
// count: for each partition the member of the first vnode clockwise from
// its point (the library's sort.Search: the first vnode ≥ the point, or
// the first of the circle), and for each group of two or more members its
// partitions, ascending. Shared: read only.
type firstVnodes struct {
	owners []uint16
	parts  [][]uint32 // by group
}

// firstVnodes computes step 3 once per circle and partition count, in one
// walk along the circle in the points' order.
func (c *circle) firstVnodes(partitions int) *firstVnodes {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.firsts[partitions]; ok {
		return f
	}
	f := &firstVnodes{owners: make([]uint16, partitions), parts: make([][]uint32, v2Groups)}
	pts := sortedPoints(partitions, c.seed)
	total := len(c.hashes)
	j := 0
	for i, pt := range pts.points {
		for j < total && c.hashes[j] < pt {
			j++
		}
		o := c.owners[0]
		if j < total {
			o = c.owners[j]
		}
		f.owners[pts.parts[i]] = o
	}
	group := make([]uint8, len(c.members))
	var size [v2Groups]int
	for i, id := range c.members {
		g := groupOf(id, c.seed)
		group[i] = uint8(g)
		size[g]++
	}
	for p, m := range f.owners {
		if g := group[m]; size[g] > 1 {
			f.parts[g] = append(f.parts[g], uint32(p))
		}
	}
	if c.firsts == nil {
		c.firsts = map[int]*firstVnodes{}
	}
	c.firsts[partitions] = f
	return f
}

func (c *circle) bytes() int { return 14 * len(c.hashes) }

// circles keeps the most recent circles. A rebuild after a change finds
// the one it differs from by a few members and merges their vnodes in or
// out, in one pass, instead of hashing and sorting N·RF vnodes; a rebuild
// of the same set (another in-process node, a change that did not touch
// the set) finds it whole. Either way the circle is the sorted set of its
// members' vnodes, which no history changes: vnode hashes are distinct
// (a collision is refused), so there is one ascending order.
var circles = &circleCache{}

const (
	maxCircles     = 3
	maxCircleBytes = 64 << 20
)

type circleCache struct {
	mu     sync.Mutex
	recent []*circle // newest first
	// Circles being computed, by circleKey: nodes in one process rebuild
	// the same set at the same time, and one computes it for all.
	flights map[string]*flight[*circle]
}

func circleKey(members []string, rf int, seed uint64) string {
	b := binary.LittleEndian.AppendUint64(nil, seed)
	b = binary.LittleEndian.AppendUint64(b, uint64(rf))
	for _, id := range members {
		b = append(append(b, id...), 0) // IDs hold no NUL
	}
	return string(b)
}

func (cc *circleCache) reset() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.recent = nil
}

// find returns the cached circle of exactly these members, or else the
// one closest to them to update from (nil if none).
func (cc *circleCache) find(members []string, rf int, seed uint64) (exact, base *circle) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	best := -1
	for i, c := range cc.recent {
		if c.seed != seed || c.rf != rf {
			continue
		}
		if slices.Equal(c.members, members) {
			copy(cc.recent[1:i+1], cc.recent[:i])
			cc.recent[0] = c
			return c, nil
		}
		if d := setDistance(c.members, members); best < 0 || d < best {
			best, base = d, c
		}
	}
	return nil, base
}

func (cc *circleCache) add(c *circle) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, o := range cc.recent {
		if o.seed == c.seed && o.rf == c.rf && slices.Equal(o.members, c.members) {
			return
		}
	}
	cc.recent = append([]*circle{c}, cc.recent...)
	total := 0
	for i, o := range cc.recent {
		total += o.bytes()
		if i == maxCircles || total > maxCircleBytes {
			cc.recent = cc.recent[:i]
			break
		}
	}
}

// setDistance is the number of members in one sorted list and not the
// other.
func setDistance(a, b []string) int {
	d, i, j := 0, 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			d, i = d+1, i+1
		case a[i] > b[j]:
			d, j = d+1, j+1
		default:
			i, j = i+1, j+1
		}
	}
	return d + len(a) - i + len(b) - j
}

// circleFor returns the circle of members (sorted, distinct). Two vnodes
// with one hash would make the library keep whichever member came last and
// could leave a member with no vnode at all (then the walk can miss it and
// panic); that is a 64-bit collision, so it is refused rather than
// handled.
func circleFor(members []string, rf int, seed uint64) (*circle, error) {
	exact, base := circles.find(members, rf, seed)
	if exact != nil {
		return exact, nil
	}
	key := circleKey(members, rf, seed)
	circles.mu.Lock()
	if f, ok := circles.flights[key]; ok {
		circles.mu.Unlock()
		<-f.done
		return f.v, f.err
	}
	f := &flight[*circle]{done: make(chan struct{})}
	if circles.flights == nil {
		circles.flights = map[string]*flight[*circle]{}
	}
	circles.flights[key] = f
	circles.mu.Unlock()
	f.v, f.err = computeCircle(members, base, rf, seed)
	circles.mu.Lock()
	delete(circles.flights, key)
	circles.mu.Unlock()
	if f.err == nil {
		circles.add(f.v)
	}
	close(f.done)
	return f.v, f.err
}

// computeCircle computes the circle of members, from base if it is close.
func computeCircle(members []string, base *circle, rf int, seed uint64) (*circle, error) {
	c := &circle{seed: seed, rf: rf, members: members}
	if base == nil || !c.mergeFrom(base) {
		c.hashes, c.owners = vnodeHashes(members, rf, seed)
	}
	for i := 1; i < len(c.hashes); i++ {
		if c.hashes[i] == c.hashes[i-1] {
			a, b := min(c.owners[i-1], c.owners[i]), max(c.owners[i-1], c.owners[i])
			return nil, fmt.Errorf("ring: vnodes of %q and %q collide at hash %#x: %w: change the seed or an id",
				members[a], members[b], c.hashes[i], ErrInvalidBackends)
		}
	}
	c.hi = make([]uint32, len(c.hashes))
	for i, h := range c.hashes {
		c.hi[i] = uint32(h >> 32)
	}
	return c, nil
}

// vnodeHashes returns the vnodes of all members, sorted, with the member
// index of each.
func vnodeHashes(members []string, rf int, seed uint64) ([]uint64, []uint16) {
	all := make([]int, len(members))
	for i := range all {
		all[i] = i
	}
	return someVnodeHashes(members, all, rf, seed)
}

// someVnodeHashes is vnodeHashes for members[i], i in which.
func someVnodeHashes(members []string, which []int, rf int, seed uint64) ([]uint64, []uint16) {
	hashes := make([]uint64, 0, len(which)*rf)
	owners := make([]uint16, 0, len(which)*rf)
	var buf []byte
	for _, i := range which {
		for j := range rf {
			buf = append(buf[:0], members[i]...)
			buf = append(buf, terminator...)
			buf = strconv.AppendInt(buf, int64(j), 10)
			hashes = append(hashes, sum64(buf, seed))
			owners = append(owners, uint16(i))
		}
	}
	return sortHashes(hashes, owners)
}

// mergeFrom fills c from base, a circle with the same seed and RF: base's
// vnodes minus those of members c lacks, renumbered, merged with the
// vnodes of members base lacks. It declines (false) when more than half
// the members are new, where hashing everything costs about as much.
func (c *circle) mergeFrom(base *circle) bool {
	remap := make([]int32, len(base.members)) // base index → c index, or -1
	var added []int
	i, j := 0, 0
	for i < len(base.members) || j < len(c.members) {
		switch {
		case j == len(c.members) || i < len(base.members) && base.members[i] < c.members[j]:
			remap[i] = -1
			i++
		case i == len(base.members) || c.members[j] < base.members[i]:
			added = append(added, j)
			j++
		default:
			remap[i] = int32(j)
			i, j = i+1, j+1
		}
	}
	if len(added) > len(c.members)/2 {
		return false
	}
	ah, ao := someVnodeHashes(c.members, added, c.rf, c.seed)
	total := len(c.members) * c.rf
	hashes, owners := make([]uint64, 0, total), make([]uint16, 0, total)
	a := 0
	for k, h := range base.hashes {
		o := remap[base.owners[k]]
		if o < 0 {
			continue
		}
		for a < len(ah) && ah[a] < h {
			hashes, owners = append(hashes, ah[a]), append(owners, ao[a])
			a++
		}
		hashes, owners = append(hashes, h), append(owners, uint16(o))
	}
	c.hashes, c.owners = append(hashes, ah[a:]...), append(owners, ao[a:]...)
	return true
}

// sortHashes returns keys ascending and vals carried along, keys being
// hashes: uniform, so a pass on their top bits puts them into buckets of
// about four, and insertion sort finishes each. Two passes over the data
// instead of an LSD radix sort's eight. Equal keys keep no particular
// order.
func sortHashes[V any](keys []uint64, vals []V) ([]uint64, []V) {
	shift := uint(64 - max(bits.Len(uint(len(keys)))-2, 1))
	start := make([]uint32, 1<<(64-shift)+1)
	for _, h := range keys {
		start[h>>shift+1]++
	}
	for d := 1; d < len(start); d++ {
		start[d] += start[d-1]
	}
	next := slices.Clone(start[:len(start)-1])
	k2, v2 := make([]uint64, len(keys)), make([]V, len(keys))
	for i, h := range keys {
		d := h >> shift
		k2[next[d]], v2[next[d]] = h, vals[i]
		next[d]++
	}
	for d := 0; d+1 < len(start); d++ {
		if lo, hi := int(start[d]), int(start[d+1]); hi-lo > 1 {
			sortBucket(k2[lo:hi], v2[lo:hi])
		}
	}
	return k2, v2
}

// sortBucket sorts one bucket of hashes, carrying vals along: by
// insertion when it is as small as uniform hashes make it, else (IDs
// crafted to crowd one bucket) by a general sort.
func sortBucket[V any](keys []uint64, vals []V) {
	if len(keys) > 32 {
		sort.Sort(hashSlice[V]{keys, vals})
		return
	}
	for i := 1; i < len(keys); i++ {
		k, v := keys[i], vals[i]
		j := i
		for ; j > 0 && keys[j-1] > k; j-- {
			keys[j], vals[j] = keys[j-1], vals[j-1]
		}
		keys[j], vals[j] = k, v
	}
}

type hashSlice[V any] struct {
	keys []uint64
	vals []V
}

func (c hashSlice[V]) Len() int           { return len(c.keys) }
func (c hashSlice[V]) Less(i, j int) bool { return c.keys[i] < c.keys[j] }
func (c hashSlice[V]) Swap(i, j int) {
	c.keys[i], c.keys[j] = c.keys[j], c.keys[i]
	c.vals[i], c.vals[j] = c.vals[j], c.vals[i]
}
