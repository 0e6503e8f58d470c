package meshdns

import (
	"net/netip"
	"slices"
	"time"
)

// Member is one mesh node as the DNS answer sees it.
type Member struct {
	Name string
	// Addr is the IP clients reach the node at, from its advertised proxy
	// address; invalid when that is a host name (A and AAAA need an IP).
	Addr netip.Addr
	// Eligible: live, ready and active. Only eligible nodes are answered
	// while there is one.
	Eligible bool
	// Self marks the node answering.
	Self bool
}

// peerMemory is how long after it last saw a peer a node that sees none
// counts as partitioned alone rather than as a mesh of one.
const peerMemory = 10 * time.Minute

// answer is an immutable answer set; queries read it through an atomic
// pointer.
type answer struct {
	v4, v6  []netip.Addr // sorted
	ttl     uint32       // seconds
	good    bool         // made of eligible nodes
	stale   bool         // no node qualifies now: the last good set, or every known node
	reason  string       // why the TTL is short, if it is
	nodes   []string     // names of the nodes answered, sorted
	updated time.Time
}

func (a *answer) empty() bool { return len(a.v4) == 0 && len(a.v6) == 0 }

// choose computes the answer for members. lastGood is the last good
// answer (nil if none yet), lastPeer when a peer was last seen.
func choose(members []Member, lastGood *answer, now, lastPeer time.Time, ttl time.Duration) *answer {
	var eligible, known []Member
	selfOK, peers := false, 0
	for _, m := range members {
		if m.Self {
			selfOK = m.Eligible
		} else {
			peers++
		}
		if !m.Addr.IsValid() {
			continue
		}
		known = append(known, m)
		if m.Eligible {
			eligible = append(eligible, m)
		}
	}
	a := &answer{ttl: uint32(ttl / time.Second), updated: now}
	switch {
	case len(eligible) > 0:
		a.fill(eligible)
		a.good = true
	case lastGood != nil:
		// No node qualifies: a partition, or every node draining. An empty
		// answer would send every client away; the last good set at
		// least names nodes that were serving a moment ago.
		a.v4, a.v6, a.nodes = lastGood.v4, lastGood.v6, lastGood.nodes
		a.stale = true
		a.reason = "no live, ready node: answering the last good set"
	default:
		// Nothing good yet (the mesh is starting): what this node knows.
		a.fill(known)
		a.stale = true
		a.reason = "no live, ready node yet: answering every known node"
	}
	switch {
	case a.stale:
	case !selfOK:
		a.reason = "this node is not ready"
	case peers == 0 && now.Sub(lastPeer) < peerMemory:
		a.reason = "this node sees no peer"
	}
	if a.reason != "" {
		a.ttl = uint32(MinTTL / time.Second)
	}
	return a
}

func (a *answer) fill(ms []Member) {
	a.v4, a.v6, a.nodes = nil, nil, nil
	seen := make(map[netip.Addr]bool, len(ms))
	for _, m := range ms {
		if seen[m.Addr] {
			continue
		}
		seen[m.Addr] = true
		a.nodes = append(a.nodes, m.Name)
		if m.Addr.Is4() {
			a.v4 = append(a.v4, m.Addr)
		} else {
			a.v6 = append(a.v6, m.Addr)
		}
	}
	slices.SortFunc(a.v4, netip.Addr.Compare)
	slices.SortFunc(a.v6, netip.Addr.Compare)
	slices.Sort(a.nodes)
}
