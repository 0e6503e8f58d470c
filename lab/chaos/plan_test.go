//go:build linux

package main

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// The schedule is a function of the seed alone, every fault is undone
// before the quiet end, and the limits hold at every instant.
func TestPlanSeededAndWithinLimits(t *testing.T) {
	const nodes, backends, total = 5, 3, 10 * time.Minute
	for seed := uint64(1); seed <= 50; seed++ {
		a := makePlan(rand.New(rand.NewPCG(seed, 1)), total, nodes, backends)
		b := makePlan(rand.New(rand.NewPCG(seed, 1)), total, nodes, backends)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("seed %d: two plans differ", seed)
		}
		if len(a) < 20 {
			t.Fatalf("seed %d: only %d steps in %v", seed, len(a), total)
		}
		impaired, down, netCut := map[int]bool{}, map[int]bool{}, false
		for _, s := range a {
			if s.At < firstFault || s.At > total-quietEnd {
				t.Fatalf("seed %d: %v at %v, outside [%v, %v]", seed, s, s.At, firstFault, total-quietEnd)
			}
			switch s.Do {
			case killNode, termNode, stopNode:
				if impaired[s.Target] {
					t.Fatalf("seed %d: %v on an impaired node", seed, s)
				}
				impaired[s.Target] = true
			case startNode, contNode:
				delete(impaired, s.Target)
			case killBackend, termBackend:
				down[s.Target] = true
			case startBackend:
				delete(down, s.Target)
			case partition, oneWay:
				if netCut {
					t.Fatalf("seed %d: %v during another network fault", seed, s)
				}
				netCut = true
			case heal:
				netCut = false
			}
			if len(impaired) > maxNodesImpaired || len(down) > maxBackendsDown {
				t.Fatalf("seed %d at %v: %d nodes impaired, %d backends down", seed, s.At, len(impaired), len(down))
			}
		}
		if len(impaired) > 0 || len(down) > 0 || netCut {
			t.Fatalf("seed %d: faults left at the end: %v %v %v", seed, impaired, down, netCut)
		}
	}
}
