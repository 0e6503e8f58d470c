package gossip

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

var testNow = time.UnixMilli(1_800_000_000_000)

func version(t time.Time, counter uint64) uint64 { return uint64(t.UnixMilli())<<16 | counter }

// kindView is a test kind scoped to a backend, like health's observations:
// key "backend\x00node", owned by the node that writes it.
const kindView Kind = 200

func viewSpec() KindSpec {
	return KindSpec{
		Kind: kindView, Name: "view", MaxValue: 64, MaxEntries: 1000, MaxBytes: 1 << 16,
		Backend:  func(key string) string { id, _, _ := strings.Cut(key, "\x00"); return id },
		Owned:    true,
		OwnerTTL: time.Hour,
	}
}

func testStore() *store {
	return newStore(time.Hour, []KindSpec{catalogSpec(validateID).withDefaults(), viewSpec()})
}

// recordEntry is the catalog entry r is a view of.
func recordEntry(r Record) Entry {
	s := r.State
	e := Entry{Kind: KindBackend, Key: r.ID, Version: r.Version, Origin: r.Origin}
	if s == StateRemoved {
		e.Deleted, s = true, StateActive
	}
	e.Value = catalogValue(s, r.Addr, max(r.Weight, 1), r.Pool)
	return e
}

// randomEntries draws catalog records and views over few keys, versions,
// origins and values, so that equal versions with different content are
// common, and some tombstones are expired at testNow. The views are of
// backends the records don't name: scoping ties a view to its backend's
// history, which TestScopedEntriesGoWithTheirBackend covers.
func randomEntries(rng *rand.Rand, n int) []Entry {
	out := make([]Entry, n)
	for i := range out {
		base := testNow.Add(-time.Duration(rng.IntN(3)) * time.Hour) // some older than the TTL
		if rng.IntN(3) > 0 {
			out[i] = recordEntry(Record{
				ID:      fmt.Sprintf("b%d", rng.IntN(4)),
				Addr:    fmt.Sprintf("10.0.0.%d:80", rng.IntN(3)),
				State:   State(1 + rng.IntN(3)),
				Version: version(base, uint64(rng.IntN(3))),
				Origin:  fmt.Sprintf("n%d", rng.IntN(2)),
			})
			continue
		}
		node := fmt.Sprintf("n%d", rng.IntN(3))
		out[i] = Entry{
			Kind: kindView, Key: fmt.Sprintf("v%d\x00%s", rng.IntN(4), node),
			Version: version(testNow, uint64(rng.IntN(4))), Origin: node,
			Value: []byte([]string{"up", "down", "down: refused"}[rng.IntN(3)]),
		}
	}
	return out
}

func mergeAll(es []Entry) *store {
	s := testStore()
	for _, e := range es {
		if _, err := s.Merge(e, testNow); err != nil {
			panic(err)
		}
	}
	return s
}

func sameStore(a, b *store) bool {
	for _, k := range []Kind{KindBackend, kindView} {
		if !reflect.DeepEqual(a.Entries(k), b.Entries(k)) || a.Digest(k) != b.Digest(k) || a.kind(k).bytes != b.kind(k).bytes {
			return false
		}
	}
	return a.digest == b.digest
}

// TestStoreMergeLaws checks that any permutation, duplication and grouping
// of the same entries, of every kind, gives the same store.
func TestStoreMergeLaws(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 2000 {
		es := randomEntries(rng, 1+rng.IntN(14))
		want := mergeAll(es)

		// Commutative and idempotent: shuffled, with duplicates.
		shuffled := append([]Entry(nil), es...)
		for range rng.IntN(len(es) + 1) {
			shuffled = append(shuffled, es[rng.IntN(len(es))])
		}
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if got := mergeAll(shuffled); !sameStore(got, want) {
			t.Fatalf("trial %d: order changed the result\nentries %v\nwant %v\ngot  %v", trial, es, want.state(true), got.state(true))
		}

		// Associative: merge two partial stores through their full state,
		// as push/pull does.
		cut := rng.IntN(len(shuffled) + 1)
		a, b := mergeAll(shuffled[:cut]), mergeAll(shuffled[cut:])
		for _, e := range a.state(true) {
			if _, err := b.Merge(e, testNow); err != nil {
				t.Fatal(err)
			}
		}
		if !sameStore(b, want) {
			t.Fatalf("trial %d: grouping changed the result\nwant %v\ngot  %v", trial, want.state(true), b.state(true))
		}

		// Merging the result into itself changes nothing.
		for _, e := range want.state(true) {
			if changed, _ := want.Merge(e, testNow); changed {
				t.Fatalf("trial %d: re-merging %v changed the store", trial, e)
			}
		}
	}
}

func TestStoreDigestIsContent(t *testing.T) {
	s := testStore()
	if s.Digest(KindBackend) != 0 || s.digest != 0 {
		t.Fatalf("empty digest = %x; want 0", s.Digest(KindBackend))
	}
	r := recordEntry(Record{ID: "b", Addr: "h:1", State: StateActive, Version: version(testNow, 0), Origin: "n"})
	s.Merge(r, testNow)
	d1 := s.Digest(KindBackend)
	r2 := r
	r2.Version++
	s.Merge(r2, testNow)
	if s.Digest(KindBackend) == d1 {
		t.Fatal("digest did not change with the record")
	}
	if s2 := mergeAll([]Entry{r2}); s2.Digest(KindBackend) != s.Digest(KindBackend) {
		t.Fatalf("digest %x; want %x for the same content", s.Digest(KindBackend), s2.Digest(KindBackend))
	}
	if s.Digest(kindView) != 0 {
		t.Fatal("a catalog write moved another kind's digest")
	}
}

func TestCatalogTombstones(t *testing.T) {
	const ttl = time.Hour
	t0 := testNow
	rec := func(s State, at time.Time, origin string) Entry {
		return recordEntry(Record{ID: "b1", Addr: "10.0.0.1:80", State: s, Version: version(at, 0), Origin: origin})
	}
	active := rec(StateActive, t0, "n1")
	tomb := rec(StateRemoved, t0.Add(time.Second), "n2")
	readd := rec(StateActive, t0.Add(2*time.Second), "n1")
	get := func(s *store) (Record, bool) {
		e, ok := s.Get(KindBackend, "b1")
		return recordOf(e), ok
	}

	tests := []struct {
		name  string
		order []Entry
		want  State
	}{
		{"tombstone beats older active", []Entry{active, tomb}, StateRemoved},
		{"older active after tombstone is ignored", []Entry{tomb, active}, StateRemoved},
		{"newer re-add beats tombstone", []Entry{active, tomb, readd}, StateActive},
		{"re-add then late tombstone", []Entry{readd, tomb, active}, StateActive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testStore()
			for _, e := range tt.order {
				s.Merge(e, t0.Add(3*time.Second))
			}
			got, ok := get(s)
			if !ok || got.State != tt.want {
				t.Fatalf("state = %v (present %v); want %v", got.State, ok, tt.want)
			}
		})
	}

	t.Run("expired tombstone is dropped and not resurrected", func(t *testing.T) {
		s := testStore()
		s.Merge(active, t0)
		s.Merge(tomb, t0)
		if n := s.Expire(t0.Add(ttl / 2)); n != 0 {
			t.Fatalf("expired %d early", n)
		}
		later := t0.Add(ttl + 2*time.Second)
		if n := s.Expire(later); n != 1 {
			t.Fatalf("Expire = %d; want 1", n)
		}
		if es := s.Entries(KindBackend); len(es) != 0 {
			t.Fatalf("records after expiry = %v; want none", es)
		}
		if changed, _ := s.Merge(active, later); changed {
			t.Fatal("an older record resurrected an expired tombstone")
		}
		if changed, _ := s.Merge(readd, later); !changed {
			t.Fatal("a re-add newer than the expired tombstone was refused")
		}
	})

	t.Run("expired tombstone arriving late deletes older record", func(t *testing.T) {
		s := testStore()
		later := t0.Add(ttl + 2*time.Second)
		s.Merge(active, later) // an old active record, alive long ago
		if changed, _ := s.Merge(tomb, later); !changed {
			t.Fatal("expired tombstone did not delete the older record")
		}
		if _, ok := s.Get(KindBackend, "b1"); ok {
			t.Fatal("record still present")
		}
		if changed, _ := s.Merge(active, later); changed {
			t.Fatal("older record accepted after the expired tombstone")
		}
		if got := s.state(true); len(got) != 1 || !got[0].equal(tomb) {
			t.Fatalf("full state = %v; want the floor %v", got, tomb)
		}
	})

	t.Run("floors are forgotten after two ttls", func(t *testing.T) {
		s := testStore()
		s.Merge(tomb, t0)
		s.Expire(t0.Add(ttl + 2*time.Second))
		s.Expire(t0.Add(2*ttl + 2*time.Second))
		if got := s.state(true); len(got) != 0 {
			t.Fatalf("state = %v; want empty", got)
		}
	})
}

// TestScopedEntriesGoWithTheirBackend: removing a backend drops what other
// kinds hold about it, on every node alike, and refuses more of it.
func TestScopedEntriesGoWithTheirBackend(t *testing.T) {
	s := testStore()
	b1 := recordEntry(Record{ID: "b1", Addr: "h:1", State: StateActive, Version: version(testNow, 0), Origin: "n1"})
	view := func(id, node string, c uint64) Entry {
		return Entry{Kind: kindView, Key: id + "\x00" + node, Version: version(testNow, c), Origin: node, Value: []byte("down")}
	}
	s.Merge(b1, testNow)
	for _, e := range []Entry{view("b1", "n1", 1), view("b1", "n2", 1), view("b2", "n1", 1)} {
		if changed, err := s.Merge(e, testNow); !changed || err != nil {
			t.Fatalf("merge %v = %v, %v", e, changed, err)
		}
	}
	tomb := b1
	tomb.Deleted, tomb.Version = true, version(testNow, 5)
	s.Merge(tomb, testNow)
	if got := s.Entries(kindView); len(got) != 1 || got[0].Key != "b2\x00n1" {
		t.Fatalf("views after removing b1 = %v; want only b2's", got)
	}
	if changed, _ := s.Merge(view("b1", "n3", 9), testNow); changed {
		t.Fatal("a view of a removed backend was accepted")
	}
	rest := mergeAll([]Entry{view("b2", "n1", 1)})
	if s.Digest(kindView) != rest.Digest(kindView) || s.kind(kindView).bytes != rest.kind(kindView).bytes {
		t.Fatal("dropping left digests or sizes behind")
	}
}

func TestEntryLessIsTotal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5000 {
		es := randomEntries(rng, 2)
		a, b := es[0], es[1]
		a.Kind, a.Key = b.Kind, b.Key
		if a.equal(b) {
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

func TestStoreBounds(t *testing.T) {
	s := testStore()
	old := testNow.Add(-2 * time.Hour)
	for i := range maxFloors + 10 {
		s.Merge(recordEntry(Record{ID: fmt.Sprintf("b%d", i), Addr: "h:1", State: StateRemoved, Version: version(old, uint64(i)), Origin: "n"}), testNow)
	}
	if len(s.floors) != maxFloors {
		t.Fatalf("floors = %d; want the cap %d", len(s.floors), maxFloors)
	}
	if _, ok := s.floors[storeKey{KindBackend, "b0"}]; ok {
		t.Fatal("the oldest floor was kept")
	}
	// A kind's byte bound refuses the entry that would pass it.
	for i := 0; ; i++ {
		e := Entry{Kind: kindView, Key: fmt.Sprintf("x\x00n%d", i), Version: 1, Origin: fmt.Sprintf("n%d", i), Value: make([]byte, 64)}
		_, err := s.Merge(e, testNow)
		if err != nil {
			if rejectReason(err) != reasonFull || s.kind(kindView).bytes > viewSpec().MaxBytes {
				t.Fatalf("at %d entries: %v, %d bytes held", i, err, s.kind(kindView).bytes)
			}
			break
		}
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

func TestKindSpecValidate(t *testing.T) {
	for name, sp := range map[string]KindSpec{
		"kind 0":          {Name: "x"},
		"no name":         {Kind: 9},
		"value too large": {Kind: 9, Name: "x", MaxValue: maxValueLen + 1},
		"owned, no ttl":   {Kind: 9, Name: "x", Owned: true},
	} {
		if err := sp.withDefaults().validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Config{Name: "n", Kinds: []KindSpec{{Kind: KindBackend, Name: "dup"}}}); err == nil {
		t.Error("a kind with the catalog's number was accepted")
	}
	if _, err := New(Config{Name: "n", Kinds: []KindSpec{{Kind: 7, Name: "a"}, {Kind: 7, Name: "b"}}}); err == nil {
		t.Error("a kind registered twice was accepted")
	}
	var de *decodeError
	if _, err := testStore().Merge(Entry{Kind: 99, Key: "k", Origin: "n"}, testNow); !errors.As(err, &de) || de.reason != reasonKind {
		t.Errorf("unknown kind: %v; want reason %q", err, reasonKind)
	}
}
