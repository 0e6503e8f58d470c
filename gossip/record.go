package gossip

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Field limits, enforced by the API and by the wire decoder alike.
const (
	maxIDLen     = 255
	maxAddrLen   = 255
	maxOriginLen = 255
	// maxRecords bounds the catalog (tombstones included) that Upsert grows,
	// and maxFloors the expired tombstones remembered. A full state of both,
	// every field at its longest (784 bytes a record), is 15.7 MB: under
	// memberlist's 20 MB push/pull cap, beyond which joins fail.
	maxRecords = 10_000
	maxFloors  = 10_000
)

// Record is one backend in the catalog. Records merge by last-writer-wins on
// the total order of [Record.Less].
type Record struct {
	ID    string
	Addr  string // host:port
	State State
	// Version is a hybrid logical clock: unix milliseconds << 16 | counter.
	// A write takes max(last+1, now<<16); receiving a record raises last.
	Version uint64
	Origin  string // name of the node that wrote it
}

// Less reports whether r sorts before o in the merge order (Version, Origin,
// State, Addr). The order is total over records of one ID, so keeping the
// maximum is commutative, associative and idempotent even when two writes
// carry the same version.
func (r Record) Less(o Record) bool {
	if c := cmp.Compare(r.Version, o.Version); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(r.Origin, o.Origin); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(r.State, o.State); c != 0 {
		return c < 0
	}
	return r.Addr < o.Addr
}

// physical returns the wall-clock part of the version.
func (r Record) physical() time.Time { return time.UnixMilli(int64(r.Version >> 16)) }

// expired reports whether r is a tombstone older than ttl at now.
func (r Record) expired(ttl time.Duration, now time.Time) bool {
	return r.State == StateRemoved && r.physical().Add(ttl).Before(now)
}

func (r Record) validate() error {
	if err := validateID(r.ID); err != nil {
		return err
	}
	if err := validateAddr(r.Addr); err != nil {
		return err
	}
	if !r.State.valid() {
		return fmt.Errorf("record %q: unknown state %d", r.ID, uint8(r.State))
	}
	if err := validateName(r.Origin); err != nil {
		return fmt.Errorf("record %q origin: %w", r.ID, err)
	}
	return nil
}

// printable reports whether s is non-empty text without control characters
// or spaces, so it logs and compares unambiguously.
func printable(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return s != ""
}

func validateID(id string) error {
	if len(id) > maxIDLen || !printable(id) {
		return fmt.Errorf("backend id %q: want 1 to %d printable bytes without spaces", id, maxIDLen)
	}
	return nil
}

func validateName(name string) error {
	if len(name) > maxOriginLen || !printable(name) {
		return fmt.Errorf("node name %q: want 1 to %d printable bytes without spaces", name, maxOriginLen)
	}
	return nil
}

// ValidateAddr checks a backend address as every node will: host:port with
// a non-empty host and a canonical port 1-65535. The admin API and the
// config use it, so what they accept a peer never refuses.
func ValidateAddr(addr string) error { return validateAddr(addr) }

// validateAddr checks host:port syntax: a non-empty host and a port 1-65535.
func validateAddr(addr string) error {
	if len(addr) > maxAddrLen || !printable(addr) {
		return fmt.Errorf("address %q: want 1 to %d printable bytes", addr, maxAddrLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("address %q: empty host", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 || strconv.FormatUint(p, 10) != port {
		return fmt.Errorf("address %q: want a port from 1 to 65535", addr)
	}
	return nil
}

// ErrUnknownBackend is returned by [Cluster.SetState] for a backend that is
// not in the catalog or is already removed.
var ErrUnknownBackend = errors.New("unknown backend")

// Catalog is the last-writer-wins map of backend records. It is a pure value
// type with no locking: [Cluster] guards its own.
//
// Removal keeps a tombstone (StateRemoved) until its physical time plus the
// tombstone TTL has passed. An expired tombstone is dropped from Records but
// remembered, for one more TTL, as a floor below which nothing for its ID is
// accepted, so an old record still circulating cannot resurrect it.
type Catalog struct {
	ttl    time.Duration
	recs   map[string]Record
	floors map[string]Record // expired tombstones, by ID
	digest uint64
	counts [StateRemoved + 1]int
	// nextExpiry is when the oldest tombstone expires; zero when there is none.
	nextExpiry time.Time
}

// NewCatalog returns an empty catalog whose tombstones live for tombstoneTTL.
func NewCatalog(tombstoneTTL time.Duration) *Catalog {
	return &Catalog{
		ttl:    tombstoneTTL,
		recs:   make(map[string]Record),
		floors: make(map[string]Record),
	}
}

// Merge merges r and reports whether the catalog changed. r is kept if it is
// greater than the record held for its ID (see [Record.Less]). An expired
// tombstone is not kept, but it still deletes an older record and raises the
// floor for its ID.
func (c *Catalog) Merge(r Record, now time.Time) bool {
	if f, ok := c.floors[r.ID]; ok && !f.Less(r) {
		return false
	}
	cur, ok := c.recs[r.ID]
	if ok && !cur.Less(r) {
		return false
	}
	if r.expired(c.ttl, now) {
		c.addFloor(r)
		if ok {
			c.remove(cur)
			return true
		}
		return false
	}
	if ok {
		c.remove(cur)
	}
	c.recs[r.ID] = r
	c.digest += recordHash(r)
	c.counts[r.State]++
	if r.State == StateRemoved {
		if exp := r.physical().Add(c.ttl); c.nextExpiry.IsZero() || exp.Before(c.nextExpiry) {
			c.nextExpiry = exp
		}
	}
	return true
}

// addFloor remembers an expired tombstone, forgetting the oldest floor when
// there are too many.
func (c *Catalog) addFloor(r Record) {
	c.floors[r.ID] = r
	if len(c.floors) <= maxFloors {
		return
	}
	var oldest Record
	first := true
	for _, f := range c.floors {
		if first || f.Less(oldest) {
			oldest, first = f, false
		}
	}
	delete(c.floors, oldest.ID)
}

func (c *Catalog) remove(r Record) {
	delete(c.recs, r.ID)
	c.digest -= recordHash(r)
	c.counts[r.State]--
}

// Get returns the record for id, tombstones included.
func (c *Catalog) Get(id string) (Record, bool) {
	r, ok := c.recs[id]
	return r, ok
}

// Has reports whether the catalog holds id (a tombstone included).
func (c *Catalog) Has(id string) bool {
	_, ok := c.recs[id]
	return ok
}

// Len returns the number of records, tombstones included.
func (c *Catalog) Len() int { return len(c.recs) }

// Records returns every record, tombstones included, sorted by ID.
func (c *Catalog) Records() []Record {
	out := make([]Record, 0, len(c.recs))
	for _, r := range c.recs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Digest returns an order-independent hash of the records held, tombstones
// included: two catalogs with the same Records have the same Digest. It is
// maintained incrementally and costs nothing to read.
func (c *Catalog) Digest() uint64 { return c.digest }

// Expire drops the tombstones that expired by now, remembering each as a
// floor, forgets floors older than two TTLs, and returns how many tombstones
// it dropped.
func (c *Catalog) Expire(now time.Time) int {
	n := 0
	if !c.nextExpiry.IsZero() && !now.Before(c.nextExpiry) {
		var next time.Time
		for _, r := range c.recs {
			if r.State != StateRemoved {
				continue
			}
			if r.expired(c.ttl, now) {
				c.remove(r)
				c.addFloor(r)
				n++
				continue
			}
			if exp := r.physical().Add(c.ttl); next.IsZero() || exp.Before(next) {
				next = exp
			}
		}
		c.nextExpiry = next
	}
	for id, f := range c.floors {
		if f.physical().Add(2 * c.ttl).Before(now) {
			delete(c.floors, id)
		}
	}
	return n
}

// state returns what a full-state exchange carries: every record plus, for
// IDs with no record, the expired tombstones still remembered as floors, so
// a peer holding an older record drops it too. Sorted by ID.
func (c *Catalog) state() []Record {
	out := make([]Record, 0, len(c.recs)+len(c.floors))
	for _, r := range c.recs {
		out = append(out, r)
	}
	for id, f := range c.floors {
		if _, ok := c.recs[id]; !ok {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// count returns the number of records in state s.
func (c *Catalog) count(s State) int {
	if !s.valid() {
		return 0
	}
	return c.counts[s]
}

// recordHash hashes the canonical encoding of r.
func recordHash(r Record) uint64 {
	var buf [2 * (maxIDLen + maxAddrLen + maxOriginLen)]byte
	return xxhash.Sum64(appendRecord(buf[:0], r))
}
