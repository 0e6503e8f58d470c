//go:build linux

package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Action kinds. Each fault has its undo; the plan always schedules both.
const (
	killNode     = "kill -9 node"
	termNode     = "SIGTERM node"
	startNode    = "restart node"
	stopNode     = "SIGSTOP node"
	contNode     = "SIGCONT node"
	partition    = "partition"
	oneWay       = "one-way partition"
	heal         = "heal network"
	killBackend  = "kill -9 backend"
	termBackend  = "SIGTERM backend"
	startBackend = "restart backend"
)

// step is one action at a time from the start of the bench.
type step struct {
	At     time.Duration
	Do     string
	Target int   // node or backend number (1-based)
	A, B   []int // partition sides; for a one-way partition A[0] drops B[0]
}

func (s step) String() string {
	switch s.Do {
	case partition:
		return fmt.Sprintf("%s %s | %s", s.Do, hostList("n", s.A), hostList("n", s.B))
	case oneWay:
		return fmt.Sprintf("%s: n%d drops all from n%d", s.Do, s.A[0], s.B[0])
	case heal:
		return s.Do
	case killBackend, termBackend, startBackend:
		return fmt.Sprintf("%s web-%d", s.Do, s.Target)
	}
	return fmt.Sprintf("%s n%d", s.Do, s.Target)
}

func hostList(prefix string, is []int) string {
	var parts []string
	for _, i := range is {
		parts = append(parts, fmt.Sprintf("%s%d", prefix, i))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// Limits of the schedule: they keep the run about the mesh's promises
// rather than about a mesh with nothing left.
const (
	// firstFault leaves the sessions time to open.
	firstFault = 10 * time.Second
	// quietEnd: every fault is undone this long before the bench ends,
	// so the bench sees the mesh recover.
	quietEnd = 30 * time.Second
	// maxNodesImpaired: at most this many nodes dead or frozen at once,
	// so a majority of five keeps serving.
	maxNodesImpaired = 2
	// maxBackendsDown is 1 of 3: the default --max-eject-percent (50)
	// lets health take out only one of three backends; a second dead one
	// would stay in the ring over budget (README, Health), which is a
	// documented degradation and not what this soak checks.
	maxBackendsDown = 1
)

// makePlan draws a schedule for a run of total length from r: the same
// seed gives the same steps. A fault starts every 3-12 s if one is
// allowed (see the limits above); at most one network fault at a time.
func makePlan(r *rand.Rand, total time.Duration, nodes, backends int) []step {
	var steps []step
	nodeFree := make([]time.Duration, nodes+1) // node i is whole again at nodeFree[i]
	backendFree := make([]time.Duration, backends+1)
	var netFree time.Duration
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo))) }
	end := total - quietEnd

	type kind struct {
		do     string
		weight int
	}
	kinds := []kind{{killNode, 2}, {termNode, 2}, {stopNode, 2}, {partition, 1}, {oneWay, 1}, {killBackend, 1}, {termBackend, 1}}
	weights := 0
	for _, k := range kinds {
		weights += k.weight
	}
	pick := func() string {
		n := r.IntN(weights)
		for _, k := range kinds {
			if n -= k.weight; n < 0 {
				return k.do
			}
		}
		return kinds[0].do
	}
	freeAt := func(free []time.Duration, at time.Duration) []int {
		var is []int
		for i := 1; i < len(free); i++ {
			if free[i] <= at {
				is = append(is, i)
			}
		}
		return is
	}

	for at := firstFault; ; at += between(3*time.Second, 12*time.Second) {
		if at >= end-5*time.Second {
			break
		}
		// Try a few kinds before giving this slot up: the draw stays a
		// function of the seed alone.
		for range 4 {
			do := pick()
			room := end - at
			switch do {
			case killNode, termNode, stopNode:
				okNodes := freeAt(nodeFree, at)
				if nodes-len(okNodes) >= maxNodesImpaired || len(okNodes) == 0 {
					continue
				}
				n := okNodes[r.IntN(len(okNodes))]
				lo, hi, undo := 5*time.Second, 20*time.Second, startNode
				switch do {
				case termNode:
					lo = 8 * time.Second // the drain takes ~6 s with the defaults
				case stopNode:
					lo, hi, undo = 3*time.Second, 12*time.Second, contNode
				}
				d := min(between(lo, hi), room)
				if d < lo {
					continue
				}
				steps = append(steps, step{At: at, Do: do, Target: n}, step{At: at + d, Do: undo, Target: n})
				nodeFree[n] = at + d
			case partition, oneWay:
				if netFree > at {
					continue
				}
				perm := r.Perm(nodes)
				for i := range perm {
					perm[i]++
				}
				var s step
				lo, hi := 10*time.Second, 45*time.Second
				if do == partition {
					k := 1 + r.IntN(nodes-1)
					a, b := slices.Clone(perm[:k]), slices.Clone(perm[k:])
					slices.Sort(a)
					slices.Sort(b)
					s = step{At: at, Do: do, A: a, B: b}
				} else {
					s = step{At: at, Do: do, A: perm[:1], B: perm[1:2]}
					hi = 25 * time.Second
				}
				d := min(between(lo, hi), room)
				if d < lo {
					continue
				}
				steps = append(steps, s, step{At: at + d, Do: heal})
				netFree = at + d
			case killBackend, termBackend:
				okBackends := freeAt(backendFree, at)
				if backends-len(okBackends) >= maxBackendsDown || len(okBackends) == 0 {
					continue
				}
				b := okBackends[r.IntN(len(okBackends))]
				d := min(between(5*time.Second, 20*time.Second), room)
				if d < 5*time.Second {
					continue
				}
				steps = append(steps, step{At: at, Do: do, Target: b}, step{At: at + d, Do: startBackend, Target: b})
				backendFree[b] = at + d
			}
			break
		}
	}
	slices.SortStableFunc(steps, func(a, b step) int { return int(a.At - b.At) })
	return steps
}
