package gossip

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

var testNow = time.UnixMilli(1_800_000_000_000)

func version(t time.Time, counter uint64) uint64 { return uint64(t.UnixMilli())<<16 | counter }

// randomRecords draws records over few IDs, versions, origins and states, so
// that equal versions with different content are common, and some
// tombstones are expired at testNow.
func randomRecords(rng *rand.Rand, n int) []Record {
	ttl := time.Hour
	out := make([]Record, n)
	for i := range out {
		base := testNow.Add(-time.Duration(rng.IntN(3)) * ttl) // some older than the TTL
		out[i] = Record{
			ID:      fmt.Sprintf("b%d", rng.IntN(4)),
			Addr:    fmt.Sprintf("10.0.0.%d:80", rng.IntN(3)),
			State:   State(1 + rng.IntN(3)),
			Version: version(base, uint64(rng.IntN(3))),
			Origin:  fmt.Sprintf("n%d", rng.IntN(2)),
		}
	}
	return out
}

func mergeAll(recs []Record) *Catalog {
	c := NewCatalog(time.Hour)
	for _, r := range recs {
		c.Merge(r, testNow)
	}
	return c
}

// TestCatalogMergeLaws checks that any permutation, duplication and grouping
// of the same records gives the same catalog.
func TestCatalogMergeLaws(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 2000 {
		recs := randomRecords(rng, 1+rng.IntN(12))
		want := mergeAll(recs)

		// Commutative and idempotent: shuffled, with duplicates.
		shuffled := append([]Record(nil), recs...)
		for range rng.IntN(len(recs) + 1) {
			shuffled = append(shuffled, recs[rng.IntN(len(recs))])
		}
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := mergeAll(shuffled)
		if !reflect.DeepEqual(got.Records(), want.Records()) || got.Digest() != want.Digest() {
			t.Fatalf("trial %d: order changed the result\nrecords %v\nwant %v\ngot  %v", trial, recs, want.Records(), got.Records())
		}

		// Associative: merge two partial catalogs through their full state,
		// as push/pull does.
		cut := rng.IntN(len(shuffled) + 1)
		a, b := mergeAll(shuffled[:cut]), mergeAll(shuffled[cut:])
		for _, r := range a.state() {
			b.Merge(r, testNow)
		}
		if !reflect.DeepEqual(b.Records(), want.Records()) || b.Digest() != want.Digest() {
			t.Fatalf("trial %d: grouping changed the result\nwant %v\ngot  %v", trial, want.Records(), b.Records())
		}

		// Merging the result into itself changes nothing.
		for _, r := range want.state() {
			if want.Merge(r, testNow) {
				t.Fatalf("trial %d: re-merging %v changed the catalog", trial, r)
			}
		}
	}
}

func TestCatalogDigestIsContent(t *testing.T) {
	c := NewCatalog(time.Hour)
	if c.Digest() != 0 {
		t.Fatalf("empty digest = %x; want 0", c.Digest())
	}
	r := Record{ID: "b", Addr: "h:1", State: StateActive, Version: version(testNow, 0), Origin: "n"}
	c.Merge(r, testNow)
	d1 := c.Digest()
	r2 := r
	r2.Version++
	c.Merge(r2, testNow)
	if c.Digest() == d1 {
		t.Fatal("digest did not change with the record")
	}
	if c2 := mergeAll([]Record{r2}); c2.Digest() != c.Digest() {
		t.Fatalf("digest %x; want %x for the same content", c.Digest(), c2.Digest())
	}
}

func TestCatalogTombstones(t *testing.T) {
	const ttl = time.Hour
	t0 := testNow
	rec := func(s State, at time.Time, origin string) Record {
		return Record{ID: "b1", Addr: "10.0.0.1:80", State: s, Version: version(at, 0), Origin: origin}
	}
	active := rec(StateActive, t0, "n1")
	tomb := rec(StateRemoved, t0.Add(time.Second), "n2")
	readd := rec(StateActive, t0.Add(2*time.Second), "n1")

	tests := []struct {
		name  string
		order []Record
		want  State
	}{
		{"tombstone beats older active", []Record{active, tomb}, StateRemoved},
		{"older active after tombstone is ignored", []Record{tomb, active}, StateRemoved},
		{"newer re-add beats tombstone", []Record{active, tomb, readd}, StateActive},
		{"re-add then late tombstone", []Record{readd, tomb, active}, StateActive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCatalog(ttl)
			for _, r := range tt.order {
				c.Merge(r, t0.Add(3*time.Second))
			}
			got, ok := c.Get("b1")
			if !ok || got.State != tt.want {
				t.Fatalf("state = %v (present %v); want %v", got.State, ok, tt.want)
			}
		})
	}

	t.Run("expired tombstone is dropped and not resurrected", func(t *testing.T) {
		c := NewCatalog(ttl)
		c.Merge(active, t0)
		c.Merge(tomb, t0)
		if n := c.Expire(t0.Add(ttl / 2)); n != 0 {
			t.Fatalf("expired %d early", n)
		}
		later := t0.Add(ttl + 2*time.Second)
		if n := c.Expire(later); n != 1 {
			t.Fatalf("Expire = %d; want 1", n)
		}
		if recs := c.Records(); len(recs) != 0 {
			t.Fatalf("records after expiry = %v; want none", recs)
		}
		if c.Merge(active, later) {
			t.Fatal("an older record resurrected an expired tombstone")
		}
		if !c.Merge(readd, later) {
			t.Fatal("a re-add newer than the expired tombstone was refused")
		}
	})

	t.Run("expired tombstone arriving late deletes older record", func(t *testing.T) {
		c := NewCatalog(ttl)
		later := t0.Add(ttl + 2*time.Second)
		c.Merge(active, later) // an old active record, alive long ago
		if !c.Merge(tomb, later) {
			t.Fatal("expired tombstone did not delete the older record")
		}
		if _, ok := c.Get("b1"); ok {
			t.Fatal("record still present")
		}
		if c.Merge(active, later) {
			t.Fatal("older record accepted after the expired tombstone")
		}
		if got := c.state(); len(got) != 1 || got[0] != tomb {
			t.Fatalf("full state = %v; want the floor %v", got, tomb)
		}
	})

	t.Run("floors are forgotten after two ttls", func(t *testing.T) {
		c := NewCatalog(ttl)
		c.Merge(tomb, t0)
		c.Expire(t0.Add(ttl + 2*time.Second))
		c.Expire(t0.Add(2*ttl + 2*time.Second))
		if got := c.state(); len(got) != 0 {
			t.Fatalf("state = %v; want empty", got)
		}
	})
}

func TestRecordLessIsTotal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		rs := randomRecords(rng, 2)
		a, b := rs[0], rs[1]
		a.ID = b.ID
		if a == b {
			continue
		}
		if a.Less(b) == b.Less(a) {
			t.Fatalf("Less not total: %v vs %v", a, b)
		}
	}
}

func TestStateStrings(t *testing.T) {
	for _, s := range []State{StateActive, StateDraining, StateRemoved} {
		got, err := ParseState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %v, %v; want %v", s.String(), got, err, s)
		}
	}
	if _, err := ParseState("gone"); err == nil {
		t.Error("ParseState(gone) = nil error")
	}
	for s, want := range map[NodeState]string{NodeActive: "active", NodeDraining: "draining", NodeLeaving: "leaving"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q; want %q", s, s.String(), want)
		}
	}
	if RoleBalancer.String() != "balancer" {
		t.Errorf("RoleBalancer = %q", RoleBalancer.String())
	}
}

func TestValidateAddr(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"10.0.0.1:80", true},
		{"[::1]:8080", true},
		{"backend.example:443", true},
		{"10.0.0.1", false},
		{":80", false},
		{"h:0", false},
		{"h:65536", false},
		{"h:080", false},
		{"h :80", false},
		{"", false},
	}
	for _, tt := range tests {
		if err := validateAddr(tt.addr); (err == nil) != tt.ok {
			t.Errorf("validateAddr(%q) = %v; want ok %v", tt.addr, err, tt.ok)
		}
	}
}

func TestCatalogBounds(t *testing.T) {
	c := NewCatalog(time.Hour)
	old := testNow.Add(-2 * time.Hour)
	for i := range maxFloors + 10 {
		r := Record{ID: fmt.Sprintf("b%d", i), Addr: "h:1", State: StateRemoved, Version: version(old, uint64(i)), Origin: "n"}
		c.Merge(r, testNow)
	}
	if len(c.floors) != maxFloors {
		t.Fatalf("floors = %d; want the cap %d", len(c.floors), maxFloors)
	}
	if _, ok := c.floors["b0"]; ok {
		t.Fatal("the oldest floor was kept")
	}

	cl, err := New(Config{Name: "full"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxRecords {
		if _, err := cl.Upsert(fmt.Sprintf("b%d", i), "h:1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Upsert("one-more", "h:1"); err == nil {
		t.Fatal("Upsert past maxRecords succeeded")
	}
	if _, err := cl.Upsert("b1", "h:2"); err != nil {
		t.Fatalf("updating a record of a full catalog: %v", err)
	}
	if n := cl.queue.NumQueued(); n > maxQueued {
		t.Fatalf("queue holds %d broadcasts; cap %d", n, maxQueued)
	}
}
