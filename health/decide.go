// Package health owns backend health: the active and passive checks a node
// runs on its own (Checker), the replicated observations and verdicts and
// their encoding (Observation, Verdict), the rule that turns every live
// node's observations into the mesh's verdict (Decide: a quorum of live
// nodes, flap damping with growing hold times, and an ejection budget), and
// the loop that applies it on the deciding node (Decider). It reaches the
// mesh only through the Mesh interface it declares, which the node adapts
// to gossip: health imports no memberlist.
//
// No load balancer we know agrees on health across instances: HAProxy,
// NGINX, Envoy and Caddy each act on their own checks, so two instances can
// route a key differently. Here a node's checks are only its vote. One node
// (the decider, the lowest-named active member) counts the votes and writes
// the verdict into gossip; every node builds its ring from the verdicts, so
// every ring agrees, and the damping history travels with the verdict, so a
// new decider carries on where the last one stopped.
package health

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Policy is how votes become verdicts. It must be identical mesh-wide: the
// node puts it in the config fingerprint.
type Policy struct {
	// Quorum is how many live voters must see a backend down to take it
	// out: 0 is a majority of the voters (live nodes that have checked it),
	// -1 is all of them, N > 0 is N of them (or all, when fewer vote).
	Quorum int
	// MaxEjectPercent caps the share of active backends out for health;
	// past it, backends a quorum sees down stay in, reported over budget.
	// 100 removes the cap; 0 is the default, 50; NoEjection keeps every
	// backend in.
	MaxEjectPercent int
	// FlapThreshold is the ejection, counted within FlapWindow of the last
	// return, from which a backend is held out: the first FlapThreshold-1
	// come back as soon as a quorum sees them up. Default 3.
	FlapThreshold int
	// FlapWindow: a backend in the ring this long is stable again, and its
	// next ejection counts as the first. Default 2m.
	FlapWindow time.Duration
	// HoldBase is the first hold: a held backend must be seen up for this
	// long before it returns, doubling with each further ejection up to
	// HoldMax. Defaults 10s and 5m.
	HoldBase, HoldMax time.Duration
}

// NoEjection as MaxEjectPercent keeps every backend in the ring.
const NoEjection = -1

// Policy defaults.
const (
	DefaultMaxEjectPercent = 50
	DefaultFlapThreshold   = 3
	DefaultFlapWindow      = 2 * time.Minute
	DefaultHoldBase        = 10 * time.Second
	DefaultHoldMax         = 5 * time.Minute
)

// WithDefaults fills zero fields.
func (p Policy) WithDefaults() Policy {
	p.MaxEjectPercent = cmp.Or(p.MaxEjectPercent, DefaultMaxEjectPercent)
	p.FlapThreshold = cmp.Or(p.FlapThreshold, DefaultFlapThreshold)
	p.FlapWindow = cmp.Or(p.FlapWindow, DefaultFlapWindow)
	p.HoldBase = cmp.Or(p.HoldBase, DefaultHoldBase)
	p.HoldMax = cmp.Or(p.HoldMax, DefaultHoldMax)
	return p
}

// Validate reports a policy that can't be applied.
func (p Policy) Validate() error {
	switch {
	case p.Quorum < -1:
		return fmt.Errorf("health quorum %d: want majority (0), all (-1) or a count > 0", p.Quorum)
	case p.MaxEjectPercent < NoEjection || p.MaxEjectPercent > 100:
		return fmt.Errorf("max eject percent %d: want 0..100", p.MaxEjectPercent)
	case p.FlapThreshold < 1:
		return fmt.Errorf("flap threshold %d: want >= 1", p.FlapThreshold)
	case p.FlapWindow <= 0 || p.HoldBase <= 0 || p.HoldMax < p.HoldBase:
		return fmt.Errorf("flap window %v, hold %v..%v: want positive, base <= max", p.FlapWindow, p.HoldBase, p.HoldMax)
	}
	return nil
}

// need is how many down votes of voters take a backend out.
func (p Policy) need(voters int) int {
	switch {
	case p.Quorum == 0:
		return voters/2 + 1
	case p.Quorum < 0 || p.Quorum > voters:
		return voters
	}
	return p.Quorum
}

// Hold is how long a backend with this many strikes must be seen up before
// it returns; zero below the flap threshold.
func (p Policy) Hold(strikes int) time.Duration {
	if strikes < p.FlapThreshold {
		return 0
	}
	h := p.HoldBase
	for range strikes - p.FlapThreshold {
		if h >= p.HoldMax/2 {
			return p.HoldMax
		}
		h *= 2
	}
	return min(h, p.HoldMax)
}

// Allowed is how many of active backends may be out for health.
func (p Policy) Allowed(active int) int { return active * max(p.MaxEjectPercent, 0) / 100 }

// Tally is the vote on one backend.
type Tally struct {
	ID     string
	Votes  int     // live voters that see it down
	Voters int     // live nodes with an observation of it
	Prev   Verdict // the verdict held; zero if none
}

// Decide turns tallies into verdicts. active is the number of backends in
// the catalog's active state, the base of the ejection budget. The result
// has one verdict per tally, in ID order; a verdict equal (Verdict.Same) to
// Prev needs no write, and a tally with no Prev and nothing to say gets a
// zero Verdict (ID empty). Decide is a pure function of its arguments.
func Decide(p Policy, tallies []Tally, active int, now time.Time) []Verdict {
	tallies = slices.Clone(tallies)
	slices.SortFunc(tallies, func(a, b Tally) int { return cmp.Compare(a.ID, b.ID) })
	out := make([]Verdict, len(tallies))
	for i, t := range tallies {
		out[i] = step(p, t, now)
	}
	// The budget: backends already out stay out before new ones go, and
	// among equals the lower ID goes first, so every decider picks alike.
	allowed := p.Allowed(active)
	if p.MaxEjectPercent >= 100 {
		allowed = len(out)
	}
	order := make([]int, 0, len(out))
	for i, v := range out {
		if v.Down() {
			order = append(order, i)
		}
	}
	slices.SortStableFunc(order, func(a, b int) int {
		wasA, wasB := tallies[a].Prev.Down(), tallies[b].Prev.Down()
		switch {
		case wasA && !wasB:
			return -1
		case wasB && !wasA:
			return 1
		}
		return 0
	})
	for n, i := range order {
		if n < allowed {
			continue
		}
		v := out[i]
		if tallies[i].Prev.Down() {
			v.Changed = uint64(now.UnixMilli()) // it goes back in now
		} else {
			v.Changed = tallies[i].Prev.Changed // it never went out
		}
		v.Reason, v.UpSince = VerdictOverBudget, 0
		out[i] = v
	}
	for i, t := range tallies {
		if t.Prev.ID == "" && out[i].Reason == VerdictUp {
			out[i] = Verdict{} // in the ring and never out: nothing to write
		}
	}
	return out
}

// step is one backend's state machine, before the budget.
func step(p Policy, t Tally, now time.Time) Verdict {
	ms := uint64(now.UnixMilli())
	down := t.Voters > 0 && t.Votes >= p.need(t.Voters)
	v := t.Prev
	if v.ID == "" {
		v = Verdict{ID: t.ID, Reason: VerdictUp}
	}
	v.Votes, v.Voters = clamp16(t.Votes), clamp16(t.Voters)
	switch v.Reason {
	case VerdictUp:
		if !down {
			return v
		}
		// A new ejection: a strike, forgiven if it had been stable.
		if v.Strikes == 0 || now.Sub(time.UnixMilli(int64(v.Changed))) >= p.FlapWindow {
			v.Strikes = 1
		} else if v.Strikes < 0xffff {
			v.Strikes++
		}
		v.Reason, v.Changed, v.UpSince = VerdictDown, ms, 0
		if p.Hold(int(v.Strikes)) > 0 {
			v.Reason = VerdictHeld
		}
	case VerdictOverBudget:
		// Counted as an ejection when it was first seen down; the budget
		// decides again whether it goes out now.
		if down {
			v.Reason = VerdictDown
			if p.Hold(int(v.Strikes)) > 0 {
				v.Reason = VerdictHeld
			}
			v.Changed = ms
		} else {
			v.Reason = VerdictUp
		}
	case VerdictDown:
		if !down {
			v.Reason, v.Changed = VerdictUp, ms
		}
	case VerdictHeld:
		switch {
		case down && v.UpSince != 0: // down again while held: hold longer
			if v.Strikes < 0xffff {
				v.Strikes++
			}
			v.UpSince = 0
		case down:
		case v.UpSince == 0:
			v.UpSince = ms
		case now.Sub(time.UnixMilli(int64(v.UpSince))) >= p.Hold(int(v.Strikes)):
			v.Reason, v.Changed, v.UpSince = VerdictUp, ms, 0
		}
	}
	return v
}

func clamp16(n int) uint16 { return uint16(min(max(n, 0), 0xffff)) }

// Member is a live member of the mesh as health sees it: a name, and
// whether it is draining. Members that are leaving are not members here.
type Member struct {
	Name     string
	Draining bool
}

// DeciderOf picks the member that decides: the lowest-named active member,
// or else the lowest-named draining one. members must be sorted by name.
func DeciderOf(members []Member) string {
	fallback := ""
	for _, m := range members {
		if !m.Draining {
			return m.Name
		}
		if fallback == "" {
			fallback = m.Name
		}
	}
	return fallback
}

// Count tallies the observations of live voters: a voter is a member that
// has observed the backend.
func Count(members []Member, obs []Observation, ids []string, verdicts map[string]Verdict) []Tally {
	live := make(map[string]bool, len(members))
	for _, m := range members {
		live[m.Name] = true
	}
	byID := make(map[string]*Tally, len(ids))
	out := make([]Tally, len(ids))
	for i, id := range ids {
		out[i] = Tally{ID: id, Prev: verdicts[id]}
		byID[id] = &out[i]
	}
	for _, o := range obs {
		t, ok := byID[o.ID]
		if !ok || !live[o.Node] {
			continue
		}
		t.Voters++
		if !o.Up {
			t.Votes++
		}
	}
	return out
}
