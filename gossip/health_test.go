package gossip

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func randomObs(rng *rand.Rand, n int) []Observation {
	out := make([]Observation, n)
	for i := range out {
		out[i] = Observation{
			Node:    fmt.Sprintf("n%d", rng.IntN(3)),
			ID:      fmt.Sprintf("b%d", rng.IntN(3)),
			Up:      rng.IntN(2) == 0,
			Version: uint64(rng.IntN(4)), // collisions on purpose
			Detail:  []string{"", "refused", "timeout"}[rng.IntN(3)],
		}
	}
	return out
}

func randomVerdicts(rng *rand.Rand, n int) []Verdict {
	out := make([]Verdict, n)
	for i := range out {
		voters := uint16(rng.IntN(4))
		out[i] = Verdict{
			ID:      fmt.Sprintf("b%d", rng.IntN(3)),
			Reason:  VerdictReason(1 + rng.IntN(4)),
			Voters:  voters,
			Votes:   uint16(rng.IntN(int(voters) + 1)),
			Strikes: uint16(rng.IntN(3)),
			Changed: uint64(rng.IntN(3)),
			Version: uint64(rng.IntN(3)),
			Origin:  fmt.Sprintf("n%d", rng.IntN(2)),
		}
	}
	return out
}

// TestHealthMergeLaws: any order, grouping or repetition of deliveries gives
// the same observations and verdicts, as the catalog's merge does.
func TestHealthMergeLaws(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	merge := func(obs []Observation, vs []Verdict) *healthState {
		h := newHealthState()
		for _, o := range obs {
			h.mergeObs(o)
		}
		for _, v := range vs {
			h.mergeVerdict(v)
		}
		return h
	}
	same := func(a, b *healthState) bool {
		return reflect.DeepEqual(a.observations(), b.observations()) && reflect.DeepEqual(a.verdictList(), b.verdictList()) &&
			a.obsDigest == b.obsDigest && a.verDigest == b.verDigest && a.obsBytes == b.obsBytes && a.verBytes == b.verBytes
	}
	for trial := range 2000 {
		obs, vs := randomObs(rng, 1+rng.IntN(10)), randomVerdicts(rng, 1+rng.IntN(10))
		want := merge(obs, vs)
		so := append([]Observation(nil), obs...)
		so = append(so, obs[rng.IntN(len(obs))])
		rng.Shuffle(len(so), func(i, j int) { so[i], so[j] = so[j], so[i] })
		sv := append([]Verdict(nil), vs...)
		sv = append(sv, vs[rng.IntN(len(vs))])
		rng.Shuffle(len(sv), func(i, j int) { sv[i], sv[j] = sv[j], sv[i] })
		if got := merge(so, sv); !same(got, want) {
			t.Fatalf("trial %d: order changed the result", trial)
		}
		cut := rng.IntN(len(so) + 1)
		a, b := merge(so[:cut], sv[:cut%len(sv)]), merge(so[cut:], sv[cut%len(sv):])
		for _, o := range a.observations() {
			b.mergeObs(o)
		}
		for _, v := range a.verdictList() {
			b.mergeVerdict(v)
		}
		if !same(b, want) {
			t.Fatalf("trial %d: grouping changed the result", trial)
		}
		for id := range want.verdicts {
			want.dropBackend(id)
		}
		for k := range want.obs {
			want.dropBackend(k.id)
		}
		if want.obsDigest != 0 || want.verDigest != 0 || want.obsBytes != 0 || want.verBytes != 0 {
			t.Fatalf("trial %d: dropping everything left digests %x %x, bytes %d %d", trial, want.obsDigest, want.verDigest, want.obsBytes, want.verBytes)
		}
	}
}

func TestClusterHealthReplication(t *testing.T) {
	cs := newTestCluster(t, 3, nil)
	if _, err := cs[0].Upsert("b1", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, cs, 5*time.Second)
	for i, c := range cs {
		if err := c.Observe("b1", i != 0, fmt.Sprintf("check %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	v, err := cs[1].SetVerdict(Verdict{ID: "b1", Reason: VerdictDown, Votes: 1, Voters: 3, Strikes: 1, Changed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if v.Origin != cs[1].LocalName() || v.Version == 0 {
		t.Fatalf("verdict not stamped: %+v", v)
	}
	waitFor(t, 5*time.Second, "observations and verdicts everywhere", func() bool {
		for _, c := range cs {
			if len(c.Observations()) != 3 || c.Verdicts()["b1"] != v || c.VerdictDigest() != cs[0].VerdictDigest() {
				return false
			}
		}
		return true
	})
	// The same decision again is no write.
	if again, err := cs[2].SetVerdict(Verdict{ID: "b1", Reason: VerdictDown, Votes: 1, Voters: 3, Strikes: 1, Changed: 1}); err != nil || again != v {
		t.Fatalf("same verdict rewritten: %+v %v", again, err)
	}
	if _, err := cs[0].SetVerdict(Verdict{ID: "nope", Reason: VerdictDown, Origin: "x"}); err == nil {
		t.Fatal("verdict for an unknown backend accepted")
	}

	// Removing the backend drops its health state everywhere.
	if _, err := cs[2].SetState("b1", StateRemoved); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "health state dropped with the backend", func() bool {
		for _, c := range cs {
			if len(c.Observations()) != 0 || len(c.Verdicts()) != 0 {
				return false
			}
		}
		return true
	})
	if err := cs[0].Observe("b1", false, ""); err == nil {
		t.Fatal("observation of a removed backend accepted")
	}
}

// TestObservationRefuted: an observation of ours from an earlier life that
// is newer than our current view is answered with our current view.
func TestObservationRefuted(t *testing.T) {
	cs := newTestCluster(t, 2, nil)
	if _, err := cs[0].Upsert("b1", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, cs, 5*time.Second)
	if err := cs[0].Observe("b1", true, ""); err != nil {
		t.Fatal(err)
	}
	stale := Observation{Node: cs[0].LocalName(), ID: "b1", Up: false, Detail: "old life",
		Version: uint64(time.Now().Add(time.Minute).UnixMilli()) << 16}
	cs[0].notifyObs(encodeObsMsg(stale))
	waitFor(t, 5*time.Second, "refutation everywhere", func() bool {
		for _, c := range cs {
			obs := c.Observations()
			if len(obs) != 1 || !obs[0].Up || obs[0].Version <= stale.Version {
				return false
			}
		}
		return true
	})
}
