package meshdns

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mem(name, ip string, eligible, self bool) Member {
	m := Member{Name: name, Eligible: eligible, Self: self}
	if ip != "" {
		m.Addr = netip.MustParseAddr(ip)
	}
	return m
}

func TestChoose(t *testing.T) {
	good := choose([]Member{mem("a", "10.0.0.1", true, true), mem("b", "10.0.0.2", true, false)}, nil, t0, t0, 5*time.Second)
	for _, tc := range []struct {
		label    string
		members  []Member
		lastGood *answer
		lastPeer time.Time
		nodes    []string
		ttl      uint32
		stale    bool
	}{
		{label: "all eligible", members: []Member{mem("a", "10.0.0.1", true, true), mem("b", "10.0.0.2", true, false), mem("c", "fd00::3", true, false)},
			lastPeer: t0, nodes: []string{"a", "b", "c"}, ttl: 5},
		{label: "draining and unready peers left out", members: []Member{mem("a", "10.0.0.1", true, true), mem("b", "10.0.0.2", false, false), mem("c", "10.0.0.3", true, false)},
			lastPeer: t0, nodes: []string{"a", "c"}, ttl: 5},
		{label: "a peer with a host name left out", members: []Member{mem("a", "10.0.0.1", true, true), mem("b", "", true, false)},
			lastPeer: t0, nodes: []string{"a"}, ttl: 5},
		{label: "self unready: the others, shortest ttl", members: []Member{mem("a", "10.0.0.1", false, true), mem("b", "10.0.0.2", true, false)},
			lastPeer: t0, nodes: []string{"b"}, ttl: 1},
		{label: "alone after having peers: shortest ttl", members: []Member{mem("a", "10.0.0.1", true, true)},
			lastPeer: t0.Add(-time.Minute), nodes: []string{"a"}, ttl: 1},
		{label: "alone for long: a mesh of one", members: []Member{mem("a", "10.0.0.1", true, true)},
			lastPeer: t0.Add(-time.Hour), nodes: []string{"a"}, ttl: 5},
		{label: "none eligible: the last good set", members: []Member{mem("a", "10.0.0.1", false, true), mem("c", "10.0.0.3", false, false)},
			lastGood: good, lastPeer: t0, nodes: []string{"a", "b"}, ttl: 1, stale: true},
		{label: "none eligible, never a good set: every known node", members: []Member{mem("a", "10.0.0.1", false, true), mem("c", "10.0.0.3", false, false)},
			lastPeer: t0, nodes: []string{"a", "c"}, ttl: 1, stale: true},
		{label: "duplicate address answered once", members: []Member{mem("a", "10.0.0.1", true, true), mem("b", "10.0.0.1", true, false)},
			lastPeer: t0, nodes: []string{"a"}, ttl: 5},
	} {
		t.Run(tc.label, func(t *testing.T) {
			a := choose(tc.members, tc.lastGood, t0, tc.lastPeer, 5*time.Second)
			if !slices.Equal(a.nodes, tc.nodes) || a.ttl != tc.ttl || a.stale != tc.stale {
				t.Fatalf("nodes %v ttl %d stale %v (%s); want %v ttl %d stale %v", a.nodes, a.ttl, a.stale, a.reason, tc.nodes, tc.ttl, tc.stale)
			}
			if a.good == a.stale {
				t.Errorf("good %v, stale %v: exactly one", a.good, a.stale)
			}
		})
	}
}

func TestLimiter(t *testing.T) {
	now := t0
	l := newLimiter(10, 20, func() time.Time { return now })
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	count := func(ip netip.Addr, n int) (allowed, slipped, dropped int) {
		for range n {
			switch l.check(ip) {
			case allow:
				allowed++
			case slip:
				slipped++
			default:
				dropped++
			}
		}
		return
	}
	if al, sl, dr := count(a, 100); al != 20 || sl != 40 || dr != 40 {
		t.Fatalf("burst: %d allowed, %d slipped, %d dropped; want 20, 40, 40", al, sl, dr)
	}
	if al, _, _ := count(b, 5); al != 5 {
		t.Fatalf("another client: %d of 5 allowed", al)
	}
	now = now.Add(time.Second)
	if al, _, _ := count(a, 100); al != 10 {
		t.Fatalf("a second later: %d allowed; want the rate, 10", al)
	}
	// One host holds a /64: its addresses share a bucket.
	v6a, v6b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::ffff:2")
	if al, _, _ := count(v6a, 20); al != 20 {
		t.Fatal("v6 burst refused")
	}
	if al, _, _ := count(v6b, 5); al != 0 {
		t.Fatalf("same /64: %d allowed; want 0", al)
	}
}

// A flood from spoofed sources fills the table; new addresses then share
// one bucket, so memory stays bounded and the flood is limited as one.
func TestLimiterBounded(t *testing.T) {
	now := t0
	l := newLimiter(10, 20, func() time.Time { return now })
	allowed := 0
	for i := range 3 * maxClients {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if l.check(ip) == allow {
			allowed++
		}
	}
	if len(l.buckets) > maxClients {
		t.Fatalf("%d buckets; want at most %d", len(l.buckets), maxClients)
	}
	if want := maxClients + 20; allowed != want {
		t.Fatalf("%d allowed; want %d (the table, then one shared burst)", allowed, want)
	}
	now = now.Add(time.Hour) // everything refilled: a sweep frees the table
	if l.check(netip.MustParseAddr("192.0.2.9")) != allow || len(l.buckets) > 1 {
		t.Fatalf("after a sweep: %d buckets", len(l.buckets))
	}
}
