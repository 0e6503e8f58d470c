package ring

import (
	"fmt"
	"math"
)

// The v1 table without the library's N² build.
//
// consistent.New (v0.10.0) adds members one at a time and re-sorts every
// vnode after each, so a ring of N members costs about N²·RF/2·log(N·RF):
// 0.4 s at 100 backends, 50 s at 1000. The table it then computes, in
// distributePartitions, is a short walk: partitions in ID order, each to
// the first vnode clockwise from its point (sort.Search over the sorted
// vnode hashes, wrapping to the first) whose member holds fewer than
// averageLoad = ceil(float64(P / N) × Load) partitions (P / N in integers),
// visiting at most all vnodes but one. walkOwners is that walk on the
// circle (circle.go: the library's vnode names, hasher and order), so it
// gives the library's table, to the partition, from a circle that a
// rebuild merges in one pass. TestWalkIsTheLibrary checks it against
// consistent.New on random configs, bounds that bind included, and the
// golden tests pin the tables the library gave before.

// walkOwners returns each partition's owner (an index into c.members) as
// the library's bounded-load walk assigns them.
func walkOwners(c *circle, partitions int, load float64) ([]uint16, error) {
	total := len(c.hashes)
	n := len(c.members)
	if total == 0 || n == 0 {
		return nil, fmt.Errorf("ring: walk over an empty circle: %w", ErrInvalidBackends)
	}
	avg := math.Ceil(float64(uint64(partitions)/uint64(n)) * load) // the library's averageLoad
	// Each partition's first vnode, in one merge of the sorted points with
	// the circle, instead of a binary search each.
	start := make([]uint32, partitions)
	pts := sortedPoints(partitions, c.seed)
	j := 0
	for i, pt := range pts.points {
		for j < total && c.hashes[j] < pt {
			j++
		}
		if j == total {
			start[pts.parts[i]] = 0
		} else {
			start[pts.parts[i]] = uint32(j)
		}
	}
	loads := make([]float64, n) // float64, as the library counts them
	owners := make([]uint16, partitions)
	for p := range owners {
		idx := int(start[p])
		for count := 1; ; count++ {
			if count >= total {
				// The library panics here ("not enough room to distribute
				// partitions"); checkRoom refuses such sets first.
				return nil, fmt.Errorf("ring: no room for partition %d: %w", p, ErrInvalidBackends)
			}
			m := c.owners[idx]
			if loads[m]+1 <= avg {
				loads[m]++
				owners[p] = m
				break
			}
			if idx++; idx >= total {
				idx = 0
			}
		}
	}
	return owners, nil
}
