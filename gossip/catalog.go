package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Record is one backend in the catalog, as [Cluster.Records] returns it: a
// view of one [KindBackend] entry, whose key is the backend ID and whose
// value is the admin state and address (see catalogValue). Removal is the
// entry's tombstone.
type Record struct {
	ID      string
	Addr    string // host:port
	State   State
	Version uint64 // the entry's hybrid logical clock
	Origin  string // name of the node that wrote it
	Weight  int    // 1-MaxWeight; 1 when the record carries none
	Pool    string // DefaultPool when the record carries none
}

// Updated is when the record was written, by its writer's clock.
func (r Record) Updated() time.Time { return time.UnixMilli(int64(r.Version >> 16)) }

// catalog bounds. A full state of both at every field's limit is some
// 15 MB: under memberlist's 20 MB push/pull cap, beyond which joins fail.
const (
	maxRecords    = 10_000
	maxAddrLen    = 255
	maxRecordSize = 820 // 2 more since records carry a weight, 34 a pool
)

// DefaultPool is the pool of a backend that names none: the pool of every
// backend written before pools existed.
const DefaultPool = "default"

// MaxPoolLen bounds a pool name.
const MaxPoolLen = 32

// ValidatePool checks a pool name: 1 to MaxPoolLen of [a-z0-9_-], starting
// with a letter or digit, so it is safe in a URL, a metric label and a log.
func ValidatePool(name string) error {
	ok := name != "" && len(name) <= MaxPoolLen && name[0] != '-' && name[0] != '_'
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("pool %q: want 1 to %d of a-z, 0-9, - and _, starting with a letter or digit", name, MaxPoolLen)
	}
	return nil
}

// MaxWeight is the largest backend weight (ring.MaxWeight).
const MaxWeight = 100

// catalogValue is a record's value: state(1 byte: active or draining)
// followed by the address, then two optional fields, each after a NUL and
// in this order: for a weight other than 1, the weight (1 byte, 2-100);
// for a pool other than the default, 'p' and the pool's name. A record of
// weight 1 in the default pool writes exactly what nodes wrote before
// weights and pools existed, so old and new nodes agree on such records;
// an old node refuses the others (NUL is not printable in an address)
// rather than route them with a wrong weight or in a wrong pool. Exactly
// one encoding is accepted for each record, so digests agree. A removed
// record keeps the value it had.
func catalogValue(s State, addr string, weight int, pool string) []byte {
	v := append([]byte{byte(s)}, addr...)
	if weight > 1 {
		v = append(v, 0, byte(weight))
	}
	if pool != "" && pool != DefaultPool {
		v = append(append(v, 0, 'p'), pool...)
	}
	return v
}

func decodeCatalogValue(v []byte) (s State, addr string, weight int, pool string, err error) {
	if len(v) < 1 {
		return 0, "", 0, "", errors.New("empty catalog value")
	}
	s = State(v[0])
	if s != StateActive && s != StateDraining {
		return 0, "", 0, "", fmt.Errorf("catalog value: unknown state %d", v[0])
	}
	rest, weight, pool := v[1:], 1, DefaultPool
	fields := bytes.Split(rest, []byte{0})
	rest, fields = fields[0], fields[1:]
	if len(fields) > 0 && len(fields[0]) == 1 && fields[0][0] != 'p' {
		weight, fields = int(fields[0][0]), fields[1:]
		if weight < 2 || weight > MaxWeight {
			return 0, "", 0, "", fmt.Errorf("catalog value: weight %d: want 2 to %d (1 is written as none)", weight, MaxWeight)
		}
	}
	if len(fields) > 0 && len(fields[0]) > 1 && fields[0][0] == 'p' {
		pool, fields = string(fields[0][1:]), fields[1:]
		if pool == DefaultPool {
			return 0, "", 0, "", errors.New("catalog value: the default pool is written as none")
		}
		if err := ValidatePool(pool); err != nil {
			return 0, "", 0, "", fmt.Errorf("catalog value: %w", err)
		}
	}
	if len(fields) > 0 {
		return 0, "", 0, "", fmt.Errorf("catalog value: %d unknown or misplaced fields after the address", len(fields))
	}
	addr = string(rest)
	if err := validateAddr(addr); err != nil {
		return 0, "", 0, "", err
	}
	return s, addr, weight, pool, nil
}

func recordOf(e Entry) Record {
	s, addr, w, pool, _ := decodeCatalogValue(e.Value) // checked when merged
	if e.Deleted {
		s = StateRemoved
	}
	return Record{ID: e.Key, Addr: addr, State: s, Version: e.Version, Origin: e.Origin, Weight: w, Pool: pool}
}

// catalogSpec is the catalog's kind, with validID as its rule for IDs.
func catalogSpec(validID func(string) error) KindSpec {
	return KindSpec{
		Kind: KindBackend, Name: "record",
		MaxValue: 1 + maxAddrLen + 2 + 2 + MaxPoolLen, MaxEntries: maxRecords, MaxBytes: maxRecords * maxRecordSize,
		Validate: func(key string, value []byte) error {
			if err := validID(key); err != nil {
				return err
			}
			_, _, _, _, err := decodeCatalogValue(value)
			return err
		},
	}
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

// validateID is the backend ID rule when Config.ValidateBackendID is not
// set: printable, at most 255 bytes. The node sets the ring's, stricter.
func validateID(id string) error {
	if len(id) > 255 || !printable(id) {
		return fmt.Errorf("backend id %q: want 1 to 255 printable bytes without spaces", id)
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
// not in the catalog or is already removed, and by writes of kinds scoped
// to such a backend.
var ErrUnknownBackend = errors.New("unknown backend")

// Records returns a snapshot of the catalog, tombstones included, sorted by ID.
func (c *Cluster) Records() []Record {
	c.mu.Lock()
	es := c.store.Entries(KindBackend)
	c.mu.Unlock()
	out := make([]Record, len(es))
	for i, e := range es {
		out[i] = recordOf(e)
	}
	return out
}

// CatalogDigest is an order-independent hash of the catalog: equal digests
// mean equal catalogs. It is Digest(KindBackend).
func (c *Cluster) CatalogDigest() uint64 { return c.Digest(KindBackend) }

// Upsert writes backend id at addr in state active with weight 1 in the
// default pool, with a new version, and broadcasts it. Upserting an active
// backend with the same address, weight and pool changes nothing and
// returns the record held.
func (c *Cluster) Upsert(id, addr string) (Record, error) { return c.UpsertWeighted(id, addr, 1) }

// UpsertWeighted is Upsert with a weight, 1 to MaxWeight.
func (c *Cluster) UpsertWeighted(id, addr string, weight int) (Record, error) {
	return c.UpsertBackend(id, addr, weight, DefaultPool)
}

// UpsertBackend is Upsert with a weight and a pool ("" is the default).
func (c *Cluster) UpsertBackend(id, addr string, weight int, pool string) (Record, error) {
	if err := validateAddr(addr); err != nil {
		return Record{}, fmt.Errorf("upsert %s: %w", id, err)
	}
	if weight < 1 || weight > MaxWeight {
		return Record{}, fmt.Errorf("upsert %s: weight %d: want 1 to %d", id, weight, MaxWeight)
	}
	if pool == "" {
		pool = DefaultPool
	}
	if err := ValidatePool(pool); err != nil {
		return Record{}, fmt.Errorf("upsert %s: %w", id, err)
	}
	e, err := c.Update(KindBackend, id, func(cur Entry, ok bool) (Entry, bool, error) {
		if r := recordOf(cur); ok && !cur.Deleted && r.State == StateActive && r.Addr == addr && r.Weight == weight && r.Pool == pool {
			return cur, false, nil
		}
		return Entry{Value: catalogValue(StateActive, addr, weight, pool)}, true, nil
	})
	if err != nil {
		return Record{}, fmt.Errorf("upsert %s: %w", id, err)
	}
	return recordOf(e), nil
}

// SetState sets the admin state of backend id (drain, remove or
// re-activate) with a new version and broadcasts it. It returns
// ErrUnknownBackend if id is not in the catalog or already removed.
func (c *Cluster) SetState(id string, s State) (Record, error) {
	if !s.valid() {
		return Record{}, fmt.Errorf("set state of %s: unknown state %d", id, uint8(s))
	}
	e, err := c.Update(KindBackend, id, func(cur Entry, ok bool) (Entry, bool, error) {
		if !ok || cur.Deleted {
			return Entry{}, false, ErrUnknownBackend
		}
		r := recordOf(cur)
		if r.State == s {
			return cur, false, nil
		}
		if s == StateRemoved {
			return Entry{Deleted: true, Value: cur.Value}, true, nil
		}
		return Entry{Value: catalogValue(s, r.Addr, r.Weight, r.Pool)}, true, nil
	})
	if err != nil {
		return Record{}, fmt.Errorf("set state of %s: %w", id, err)
	}
	return recordOf(e), nil
}
