package gossip

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
)

// KindsBudget is what the registered kinds may hold together (the sum of
// their MaxBytes): with the catalog and its floors at their bounds, a full
// state stays under memberlist's 20 MB push/pull cap, past which joins fail
// (TestFullStateFitsPushPull).
const KindsBudget = 4 << 20

// Kind names one kind of replicated state. Its number is part of the wire
// format: a number is never reused for another kind.
type Kind uint8

// KindBackend is the backend catalog: the one kind gossip reads itself
// (Upsert, SetState, Records). Every other kind is registered by its owner
// in Config.Kinds and is opaque bytes here.
const KindBackend Kind = 1

// KindSpec says how entries of one kind are bounded, checked and spread.
// The merge rule is the same for every kind: last writer wins on
// [Entry.Less].
type KindSpec struct {
	Kind Kind
	// Name labels the kind in metrics and logs: lower case, constant.
	Name string
	// MaxValue bounds one value, at most maxValueLen so that one entry
	// always fits a gossip packet. Default maxValueLen.
	MaxValue int
	// MaxEntries and MaxBytes bound what is held of the kind, tombstones
	// included (MaxBytes counts encoded entries). Together the kinds must fit
	// memberlist's 20 MB push/pull cap. Defaults 10,000 and 1 MiB.
	MaxEntries, MaxBytes int
	// Validate checks the key and value of an entry, from this node or a
	// peer, as its owner will decode them; nil accepts any. It must be a
	// pure function: every node must accept the same entries.
	Validate func(key string, value []byte) error
	// Backend, if set, names the backend an entry belongs to: while the
	// catalog holds that backend as removed, its entries are dropped and
	// refused, so a removed backend takes its state with it. (An entry
	// refused here while a peer already saw the backend re-added comes
	// back by digest repair: the kinds' digests differ until it does.)
	Backend func(key string) string
	// Owned means only the node named in an entry's Origin writes its key
	// (its own view of something). An entry of ours from before a restart
	// that beats what this node now holds is refuted by writing ours again
	// with a newer version, and the entries of a node that is no longer a
	// member are forgotten OwnerTTL after they were written.
	Owned    bool
	OwnerTTL time.Duration
	// RelayAll passes on every entry a full-state exchange brings, not only
	// the first few: for kinds that change rings.
	RelayAll bool
	// Secret entries never travel in the clear: without Config.SecretKey
	// they are neither written nor accepted.
	Secret bool
}

func (s KindSpec) withDefaults() KindSpec {
	s.MaxValue = cmp.Or(s.MaxValue, maxValueLen)
	s.MaxEntries = cmp.Or(s.MaxEntries, 10_000)
	s.MaxBytes = cmp.Or(s.MaxBytes, 1<<20)
	return s
}

func (s KindSpec) validate() error {
	switch {
	case s.Kind == 0:
		return fmt.Errorf("kind %q: number 0 is reserved", s.Name)
	case s.Name == "" || !printable(s.Name):
		return fmt.Errorf("kind %d: want a printable name", s.Kind)
	case s.MaxValue < 0 || s.MaxValue > maxValueLen:
		return fmt.Errorf("kind %q: max value %d bytes, want at most %d (one gossip packet)", s.Name, s.MaxValue, maxValueLen)
	case s.MaxEntries < 0 || s.MaxBytes < 0:
		return fmt.Errorf("kind %q: negative bounds", s.Name)
	case s.Owned && s.OwnerTTL <= 0:
		return fmt.Errorf("kind %q: an owned kind needs an owner ttl", s.Name)
	}
	return nil
}

// Entry is one replicated value.
type Entry struct {
	Kind Kind
	Key  string
	// Version is a hybrid logical clock: unix milliseconds << 16 | counter.
	// A write takes max(last+1, now<<16); receiving an entry raises last.
	Version uint64
	Origin  string // the node that wrote it
	// Deleted marks a tombstone, kept for the tombstone TTL so an older
	// write still circulating cannot bring the key back. Its Value is the
	// last one written.
	Deleted bool
	Value   []byte
}

// Time is when the entry was written, by its writer's clock.
func (e Entry) Time() time.Time { return time.UnixMilli(int64(e.Version >> 16)) }

// Less reports whether e sorts before o in the merge order (Version,
// Origin, Deleted, Value). The order is total over entries of one key, so
// keeping the maximum is commutative, associative and idempotent even when
// two writes carry the same version.
func (e Entry) Less(o Entry) bool {
	if c := cmp.Compare(e.Version, o.Version); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(e.Origin, o.Origin); c != 0 {
		return c < 0
	}
	if e.Deleted != o.Deleted {
		return !e.Deleted
	}
	return bytes.Compare(e.Value, o.Value) < 0
}

func (e Entry) equal(o Entry) bool {
	return e.Kind == o.Kind && e.Key == o.Key && e.Version == o.Version && e.Origin == o.Origin &&
		e.Deleted == o.Deleted && bytes.Equal(e.Value, o.Value)
}

// expired reports whether e is a tombstone older than ttl at now.
func (e Entry) expired(ttl time.Duration, now time.Time) bool {
	return e.Deleted && e.Time().Add(ttl).Before(now)
}

// validate checks what every kind shares; the kind's own rule is apart.
func (e Entry) validate() error {
	if len(e.Key) > maxKeyLen || !printableKey(e.Key) {
		return fmt.Errorf("entry key %q: want 1 to %d bytes without controls or spaces", e.Key, maxKeyLen)
	}
	if err := validateName(e.Origin); err != nil {
		return fmt.Errorf("entry %q origin: %w", e.Key, err)
	}
	if len(e.Value) > maxValueLen {
		return fmt.Errorf("entry %q: value of %d bytes, limit %d", e.Key, len(e.Value), maxValueLen)
	}
	return nil
}

// printableKey is printable, but a key may join its parts with a NUL (an
// observation's backend and node).
func printableKey(s string) bool {
	for _, c := range []byte(s) {
		if (c <= ' ' && c != 0) || c == 0x7f {
			return false
		}
	}
	return s != ""
}

// entryHash hashes the canonical encoding of e.
func entryHash(e Entry) uint64 {
	var buf [maxEntryLen]byte
	return xxhash.Sum64(appendEntry(buf[:0], e))
}

func entrySize(e Entry) int {
	return 1 + uvarintLen(uint64(len(e.Key))) + len(e.Key) + uvarintLen(e.Version) +
		uvarintLen(uint64(len(e.Origin))) + len(e.Origin) + 1 + uvarintLen(uint64(len(e.Value))) + len(e.Value)
}

type storeKey struct {
	kind Kind
	key  string
}

// kindState is what the store holds of one kind.
type kindState struct {
	spec    KindSpec
	entries map[string]Entry
	digest  uint64 // sum of entry hashes: order-independent
	bytes   int    // encoded size of entries
	deleted int    // tombstones among entries
}

// store is the last-writer-wins map of every kind. It is a pure value type
// with no locking and no clock of its own: [Cluster] guards it and passes
// the time in.
//
// Deleting keeps a tombstone until its physical time plus the tombstone TTL
// has passed. An expired tombstone is dropped but remembered, for one more
// TTL, as a floor below which nothing for its key is accepted, so an old
// write still circulating cannot resurrect it.
type store struct {
	ttl    time.Duration
	kinds  map[Kind]*kindState
	floors map[storeKey]Entry // expired tombstones
	digest uint64             // sum over every kind
	// nextExpiry is when the oldest tombstone expires; zero when none.
	nextExpiry time.Time
}

func newStore(ttl time.Duration, specs []KindSpec) *store {
	s := &store{ttl: ttl, kinds: make(map[Kind]*kindState, len(specs)), floors: make(map[storeKey]Entry)}
	for _, sp := range specs {
		s.kinds[sp.Kind] = &kindState{spec: sp, entries: make(map[string]Entry)}
	}
	return s
}

func (s *store) kind(k Kind) *kindState { return s.kinds[k] }

// check reports why e can't be held: its shape, its kind's rule, or the
// kind's bounds. It is what Merge refuses, as an error.
func (s *store) check(e Entry) error {
	ks := s.kinds[e.Kind]
	if ks == nil {
		return reject(reasonKind, "entry %q of unknown kind %d", e.Key, e.Kind)
	}
	if err := e.validate(); err != nil {
		return reject(reasonMalformed, "%s: %w", ks.spec.Name, err)
	}
	if len(e.Value) > ks.spec.MaxValue {
		return reject(reasonOversized, "%s %q: value of %d bytes, limit %d", ks.spec.Name, e.Key, len(e.Value), ks.spec.MaxValue)
	}
	if ks.spec.Validate != nil {
		if err := ks.spec.Validate(e.Key, e.Value); err != nil {
			return reject(reasonMalformed, "%s: %w", ks.spec.Name, err)
		}
	}
	cur, ok := ks.entries[e.Key]
	n, size := len(ks.entries), ks.bytes+entrySize(e)
	if ok {
		n--
		size -= entrySize(cur)
	}
	if n >= ks.spec.MaxEntries || size > ks.spec.MaxBytes {
		return reject(reasonFull, "%s full (%d entries, %d bytes): %q refused", ks.spec.Name, len(ks.entries), ks.bytes, e.Key)
	}
	return nil
}

// Merge merges e and reports whether the store changed. e is kept if it is
// greater than the entry held for its key (see [Entry.Less]) and its
// backend, for a kind scoped to one, is not removed. An expired tombstone
// is not kept, but it still deletes an older entry and raises the floor.
// An entry that fails check is refused with its error.
func (s *store) Merge(e Entry, now time.Time) (bool, error) {
	ks := s.kinds[e.Kind]
	k := storeKey{e.Kind, e.Key}
	if f, ok := s.floors[k]; ok && !f.Less(e) {
		return false, nil
	}
	if ks != nil {
		if cur, ok := ks.entries[e.Key]; ok && !cur.Less(e) {
			return false, nil
		}
	}
	if err := s.check(e); err != nil {
		return false, err
	}
	if ks.spec.Backend != nil && s.removed(ks.spec.Backend(e.Key)) {
		return false, nil
	}
	cur, had := ks.entries[e.Key]
	if e.expired(s.ttl, now) {
		s.addFloor(e)
		dropped := s.dropScoped(e)
		if had {
			s.remove(ks, cur)
			return true, nil
		}
		return dropped, nil
	}
	if had {
		s.remove(ks, cur)
	}
	e.Value = bytes.Clone(e.Value)
	ks.entries[e.Key] = e
	h := entryHash(e)
	ks.digest += h
	s.digest += h
	ks.bytes += entrySize(e)
	if e.Deleted {
		ks.deleted++
		if exp := e.Time().Add(s.ttl); s.nextExpiry.IsZero() || exp.Before(s.nextExpiry) {
			s.nextExpiry = exp
		}
		s.dropScoped(e)
	}
	return true, nil
}

// removed reports whether the catalog holds backend id as removed: a
// tombstone, or an expired one remembered as a floor with nothing newer.
func (s *store) removed(id string) bool {
	if e, ok := s.kinds[KindBackend].entries[id]; ok {
		return e.Deleted
	}
	_, floor := s.floors[storeKey{KindBackend, id}]
	return floor
}

// dropScoped forgets every entry scoped to a backend the catalog just
// removed, and reports whether there was any.
func (s *store) dropScoped(e Entry) bool {
	if e.Kind != KindBackend {
		return false
	}
	dropped := false
	for _, ks := range s.kinds {
		if ks.spec.Backend == nil {
			continue
		}
		for key, x := range ks.entries {
			if ks.spec.Backend(key) == e.Key {
				s.remove(ks, x)
				dropped = true
			}
		}
	}
	return dropped
}

func (s *store) remove(ks *kindState, e Entry) {
	delete(ks.entries, e.Key)
	h := entryHash(e)
	ks.digest -= h
	s.digest -= h
	ks.bytes -= entrySize(e)
	if e.Deleted {
		ks.deleted--
	}
}

// addFloor remembers an expired tombstone, forgetting the oldest floor when
// there are more than the catalog's entry bound.
func (s *store) addFloor(e Entry) {
	s.floors[storeKey{e.Kind, e.Key}] = e
	if len(s.floors) <= maxFloors {
		return
	}
	var oldest Entry
	first := true
	for _, f := range s.floors {
		if first || f.Less(oldest) {
			oldest, first = f, false
		}
	}
	delete(s.floors, storeKey{oldest.Kind, oldest.Key})
}

// Get returns the entry for (kind, key), tombstones included.
func (s *store) Get(k Kind, key string) (Entry, bool) {
	ks := s.kinds[k]
	if ks == nil {
		return Entry{}, false
	}
	e, ok := ks.entries[key]
	return e, ok
}

// Entries returns every entry of kind k, tombstones included, sorted by key.
func (s *store) Entries(k Kind) []Entry {
	ks := s.kinds[k]
	if ks == nil {
		return nil
	}
	out := make([]Entry, 0, len(ks.entries))
	for _, e := range ks.entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// Digest returns an order-independent hash of the entries of kind k,
// tombstones included: equal entries give equal digests.
func (s *store) Digest(k Kind) uint64 {
	if ks := s.kinds[k]; ks != nil {
		return ks.digest
	}
	return 0
}

// Expire drops the tombstones that expired by now, remembering each as a
// floor, forgets floors older than two TTLs, and returns how many
// tombstones it dropped.
func (s *store) Expire(now time.Time) int {
	n := 0
	if !s.nextExpiry.IsZero() && !now.Before(s.nextExpiry) {
		var next time.Time
		for _, ks := range s.kinds {
			if ks.deleted == 0 {
				continue
			}
			for _, e := range ks.entries {
				if !e.Deleted {
					continue
				}
				if e.expired(s.ttl, now) {
					s.remove(ks, e)
					s.addFloor(e)
					n++
					continue
				}
				if exp := e.Time().Add(s.ttl); next.IsZero() || exp.Before(next) {
					next = exp
				}
			}
		}
		s.nextExpiry = next
	}
	for k, f := range s.floors {
		if f.Time().Add(2 * s.ttl).Before(now) {
			delete(s.floors, k)
		}
	}
	return n
}

// forgetOwned drops the entries of owned kinds whose writer is not live
// and which are older than their kind's owner TTL, and returns how many.
func (s *store) forgetOwned(live func(node string) bool, now time.Time) int {
	n := 0
	for _, ks := range s.kinds {
		if !ks.spec.Owned {
			continue
		}
		for _, e := range ks.entries {
			if !live(e.Origin) && now.Sub(e.Time()) > ks.spec.OwnerTTL {
				s.remove(ks, e)
				n++
			}
		}
	}
	return n
}

// state returns what a full-state exchange carries: every entry plus, for
// keys with no entry, the expired tombstones still remembered as floors, so
// a peer holding an older entry drops it too. Secret kinds are left out
// unless secret is set. Sorted by (kind, key).
func (s *store) state(secret bool) []Entry {
	var out []Entry
	for _, ks := range s.kinds {
		if ks.spec.Secret && !secret {
			continue
		}
		for _, e := range ks.entries {
			out = append(out, e)
		}
	}
	for k, f := range s.floors {
		if ks := s.kinds[k.kind]; ks == nil || (ks.spec.Secret && !secret) {
			continue
		}
		if _, ok := s.kinds[k.kind].entries[k.key]; !ok {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, compareEntries)
	return out
}

func compareEntries(a, b Entry) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Key, b.Key))
}
