package node

import (
	"strconv"
	"testing"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/ring"
)

// TestSlowStartRamp: a backend added takes none of its keys at once, all
// of them at the end, a share that only rises in between, and a key that
// moved to it never goes back.
func TestSlowStartRamp(t *testing.T) {
	t0 := time.UnixMilli(1_800_000_000_000)
	old := uint64(t0.Add(-time.Hour).UnixMilli()) << 16
	recs := []gossip.Record{
		{ID: "a", Addr: "10.0.0.1:80", State: gossip.StateActive, Version: old},
		{ID: "b", Addr: "10.0.0.2:80", State: gossip.StateActive, Version: old},
		{ID: "new", Addr: "10.0.0.3:80", State: gossip.StateActive, Version: uint64(t0.UnixMilli()) << 16},
	}
	tab, _, err := newTable(ring.Config{Partitions: 7919, ReplicationFactor: 100}, recs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const d = 30 * time.Second
	const keys = 20_000
	owned := 0 // keys the ring gives new
	onNew := make([]bool, keys)
	prev := -1
	for step := 0; step <= 10; step++ {
		now := t0.Add(time.Duration(step) * d / 10)
		got := 0
		for i := range keys {
			k := []byte("k" + strconv.Itoa(i))
			ids, _ := tab.rampOrder(k, tab.Ring.Candidates(k, 1+rampExtra), d, now)
			if step == 0 && tab.Ring.Candidates(k, 1)[0] == "new" {
				owned++
			}
			isNew := ids[0] == "new"
			if onNew[i] && !isNew {
				t.Fatalf("key %d left new at step %d", i, step)
			}
			onNew[i] = isNew
			if isNew {
				got++
			}
		}
		t.Logf("t=%v: new has %d of its %d keys", now.Sub(t0), got, owned)
		if got < prev {
			t.Fatalf("share fell from %d to %d", prev, got)
		}
		prev = got
		want := float64(owned) * float64(step) / 10
		if diff := float64(got) - want; diff > 0.03*keys || diff < -0.03*keys {
			t.Errorf("step %d: %d keys, want about %.0f", step, got, want)
		}
	}
	if prev != owned {
		t.Fatalf("after the ramp new has %d keys, the ring gives it %d", prev, owned)
	}
}
