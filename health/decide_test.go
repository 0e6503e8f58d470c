package health

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func defaultPolicy() Policy { return Policy{}.WithDefaults() }

// sim runs Decide over time for one backend seen down by votes(t) of 5
// voters, applying each verdict as gossip would, and counts ring changes.
type sim struct {
	p        Policy
	now      time.Time
	verdicts map[string]Verdict
	changes  int
}

func newSim(p Policy) *sim { return &sim{p: p, now: t0, verdicts: map[string]Verdict{}} }

func (s *sim) step(active int, tallies ...Tally) {
	for i := range tallies {
		tallies[i].Prev = s.verdicts[tallies[i].ID]
	}
	for _, v := range Decide(s.p, tallies, active, s.now) {
		if v.ID == "" {
			continue
		}
		if v.Down() != s.verdicts[v.ID].Down() {
			s.changes++
		}
		s.verdicts[v.ID] = v
	}
}

func (s *sim) out(id string) bool { return s.verdicts[id].Down() }

func TestQuorum(t *testing.T) {
	for _, tt := range []struct {
		quorum, votes, voters int
		out                   bool
	}{
		{0, 2, 5, false}, {0, 3, 5, true}, {0, 1, 1, true}, {0, 1, 2, false}, {0, 2, 2, true},
		{0, 0, 0, false}, {-1, 4, 5, false}, {-1, 5, 5, true}, {2, 2, 5, true}, {2, 1, 5, false},
		{7, 3, 3, true}, // more than vote: all of them
	} {
		p := defaultPolicy()
		p.Quorum = tt.quorum
		p.MaxEjectPercent = 100
		got := Decide(p, []Tally{{ID: "a", Votes: tt.votes, Voters: tt.voters}}, 4, t0)
		if got[0].Down() != tt.out {
			t.Errorf("quorum %d, %d/%d down: out = %v; want %v", tt.quorum, tt.votes, tt.voters, got[0].Down(), tt.out)
		}
	}
}

func TestHealthyNeverJudgedWritesNothing(t *testing.T) {
	got := Decide(defaultPolicy(), []Tally{{ID: "a", Votes: 0, Voters: 5}}, 3, t0)
	if got[0] != (Verdict{}) {
		t.Fatalf("verdict for a healthy backend never judged: %+v", got[0])
	}
	// One dissenting voter changes nothing either.
	got = Decide(defaultPolicy(), []Tally{{ID: "a", Votes: 1, Voters: 5}}, 3, t0)
	if got[0] != (Verdict{}) {
		t.Fatalf("1/5 down: %+v", got[0])
	}
}

// TestFlapDamping: a backend that keeps going down is out for good after
// FlapThreshold ejections, with a hold that grows, and comes back once it
// has been up for the hold.
func TestFlapDamping(t *testing.T) {
	p := defaultPolicy()
	s := newSim(p)
	for range 30 { // 1 s down, 1 s up, for a minute
		s.step(3, Tally{ID: "a", Votes: 5, Voters: 5})
		s.now = s.now.Add(time.Second)
		s.step(3, Tally{ID: "a", Votes: 0, Voters: 5})
		s.now = s.now.Add(time.Second)
	}
	if s.changes > 2*p.FlapThreshold-1 {
		t.Fatalf("%d ring changes while flapping; want at most %d", s.changes, 2*p.FlapThreshold-1)
	}
	if !s.out("a") || s.verdicts["a"].Reason != VerdictHeld {
		t.Fatalf("flapping backend not held: %+v", s.verdicts["a"])
	}
	strikes := s.verdicts["a"].Strikes
	hold := p.Hold(int(strikes))
	if hold != p.HoldMax {
		t.Fatalf("after %d strikes hold = %v; want it grown to %v", strikes, hold, p.HoldMax)
	}
	// Stable: it returns after the hold, not before.
	s.step(3, Tally{ID: "a", Votes: 5, Voters: 5})
	hold = p.Hold(int(s.verdicts["a"].Strikes))
	s.now = s.now.Add(time.Second)
	s.step(3, Tally{ID: "a", Votes: 0, Voters: 5})
	s.now = s.now.Add(hold - time.Second)
	s.step(3, Tally{ID: "a", Votes: 0, Voters: 5})
	if !s.out("a") {
		t.Fatal("returned before the hold was over")
	}
	s.now = s.now.Add(time.Second)
	s.step(3, Tally{ID: "a", Votes: 0, Voters: 5})
	if s.out("a") {
		t.Fatalf("still out after a stable hold: %+v", s.verdicts["a"])
	}
	// Stable for the flap window: the next ejection is a first one again.
	s.now = s.now.Add(p.FlapWindow)
	s.step(3, Tally{ID: "a", Votes: 5, Voters: 5})
	if v := s.verdicts["a"]; v.Reason != VerdictDown || v.Strikes != 1 {
		t.Fatalf("ejection after a stable window: %+v; want down with 1 strike", v)
	}
}

func TestHoldGrows(t *testing.T) {
	p := defaultPolicy()
	want := []time.Duration{0, 0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 5 * time.Minute, 5 * time.Minute}
	for i, w := range want {
		if got := p.Hold(i + 1); got != w {
			t.Errorf("Hold(%d) = %v; want %v", i+1, got, w)
		}
	}
	if got := p.Hold(60000); got != p.HoldMax {
		t.Errorf("Hold(60000) = %v", got)
	}
}

// TestEjectionBudget: past MaxEjectPercent, backends seen down stay in,
// those already out stay out first, and a recovery frees a place.
func TestEjectionBudget(t *testing.T) {
	s := newSim(defaultPolicy()) // 50 %
	all := func(down ...string) []Tally {
		var ts []Tally
		for _, id := range []string{"a", "b", "c", "d"} {
			t := Tally{ID: id, Voters: 3}
			for _, d := range down {
				if d == id {
					t.Votes = 3
				}
			}
			ts = append(ts, t)
		}
		return ts
	}
	s.step(4, all("c")...)
	s.step(4, all("a", "b", "c", "d")...)
	var out, over []string
	for _, id := range []string{"a", "b", "c", "d"} {
		switch s.verdicts[id].Reason {
		case VerdictDown:
			out = append(out, id)
		case VerdictOverBudget:
			over = append(over, id)
		}
	}
	if !reflect.DeepEqual(out, []string{"a", "c"}) || !reflect.DeepEqual(over, []string{"b", "d"}) {
		t.Fatalf("out %v, over budget %v; want [a c] out (c first), [b d] kept", out, over)
	}
	// c recovers: b takes its place.
	s.now = s.now.Add(time.Second)
	s.step(4, all("a", "b", "d")...)
	if !s.out("a") || !s.out("b") || s.out("c") || s.out("d") {
		t.Fatalf("after c recovered: %+v", s.verdicts)
	}
	// Steady state: no write.
	tallies := all("a", "b", "d")
	for i := range tallies {
		tallies[i].Prev = s.verdicts[tallies[i].ID]
	}
	for i, v := range Decide(s.p, tallies, 4, s.now.Add(time.Second)) {
		if v.ID != "" && !v.Same(tallies[i].Prev) {
			t.Fatalf("steady state rewrites %s: %+v -> %+v", v.ID, tallies[i].Prev, v)
		}
	}
	// NoEjection never ejects; one backend of one is never ejected at 50 %.
	if got := Decide(Policy{MaxEjectPercent: NoEjection}.WithDefaults(), all("a"), 4, t0); got[0].Down() {
		t.Fatal("NoEjection ejected")
	}
	if got := Decide(defaultPolicy(), []Tally{{ID: "a", Votes: 1, Voters: 1}}, 1, t0); got[0].Down() || got[0].Reason != VerdictOverBudget {
		t.Fatalf("lone backend: %+v", got[0])
	}
}

// TestDecideIsDeterministic: the order tallies come in changes nothing, so
// any decider decides alike.
func TestDecideIsDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	reasons := []VerdictReason{VerdictUp, VerdictDown, VerdictHeld, VerdictOverBudget}
	for trial := range 2000 {
		n := 1 + rng.IntN(8)
		ts := make([]Tally, n)
		for i := range ts {
			voters := rng.IntN(6)
			ts[i] = Tally{ID: fmt.Sprintf("b%d", i), Voters: voters, Votes: rng.IntN(voters + 1)}
			if rng.IntN(2) == 0 {
				ts[i].Prev = Verdict{ID: ts[i].ID, Reason: reasons[rng.IntN(4)], Strikes: uint16(rng.IntN(5)),
					Changed: uint64(t0.Add(-time.Duration(rng.IntN(300)) * time.Second).UnixMilli())}
			}
		}
		want := Decide(defaultPolicy(), ts, n, t0)
		rng.Shuffle(n, func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
		if got := Decide(defaultPolicy(), ts, n, t0); !reflect.DeepEqual(got, want) {
			t.Fatalf("trial %d: order changed the verdicts", trial)
		}
		out := 0
		for _, v := range want {
			if v.Down() {
				out++
			}
		}
		if out > defaultPolicy().Allowed(n) {
			t.Fatalf("trial %d: %d of %d out, budget %d", trial, out, n, defaultPolicy().Allowed(n))
		}
	}
}

// TestDeciderOf: the lowest-named active member decides, else the lowest
// draining one. (Leaving members are no members here: the node's adapter
// leaves them out, node's TestLiveMemberRule checks that.)
func TestDeciderOf(t *testing.T) {
	if got := DeciderOf([]Member{{Name: "a", Draining: true}, {Name: "c"}}); got != "c" {
		t.Errorf("decider = %q; want c", got)
	}
	if got := DeciderOf([]Member{{Name: "b", Draining: true}, {Name: "d", Draining: true}}); got != "b" {
		t.Errorf("decider = %q; want the draining b", got)
	}
	if got := DeciderOf(nil); got != "" {
		t.Errorf("decider of no members = %q", got)
	}
	obs := []Observation{{Node: "a", ID: "x"}, {Node: "b", ID: "x", Up: true}, {Node: "gone", ID: "x"}, {Node: "a", ID: "unknown"}}
	got := Count([]Member{{Name: "a"}, {Name: "b", Draining: true}}, obs, []string{"x"}, nil)
	if len(got) != 1 || got[0].Votes != 1 || got[0].Voters != 2 {
		t.Errorf("count = %+v; want 1 of 2 (the gone node doesn't vote)", got)
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := defaultPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, broken := range map[string]func(*Policy){
		"quorum -2":     func(p *Policy) { p.Quorum = -2 },
		"eject 101 %":   func(p *Policy) { p.MaxEjectPercent = 101 },
		"threshold 0":   func(p *Policy) { p.FlapThreshold = 0 },
		"hold base>max": func(p *Policy) { p.HoldBase, p.HoldMax = time.Minute, time.Second },
	} {
		p := defaultPolicy()
		broken(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: validated", name)
		}
	}
}
