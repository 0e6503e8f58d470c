package ring

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/buraksezer/consistent"
)

// MaxIDLen is the longest backend ID, in bytes.
const MaxIDLen = 128

// terminator ends every member name the library sees. The library names
// vnodes fmt.Sprintf("%s%d", name, i), which is ambiguous: "node1"+"10"
// and "node11"+"0" are the same vnode, the member added last takes it, and
// the table then depends on the order members were learned in (and the
// library's Remove panics). IDs can't contain a NUL (ValidateID admits
// only [A-Za-z0-9._:-]), so in "id\x00i" the ID is everything before the
// only NUL and every vnode name belongs to exactly one (member, i).
const terminator = "\x00"

// ValidateID reports whether id is acceptable as a backend ID: 1 to
// MaxIDLen characters of [A-Za-z0-9._:-], not "." or "..", not starting
// with "-". It is the mesh's one rule for backend IDs: the config, the
// admin API and every record that arrives by gossip are held to it.
//
// The rule is HAProxy's for server names. It keeps IDs that need no
// escaping in a URL path (/v1/backends/ID), a shell or a metric label,
// that can't pass for a path segment ("..") or a flag ("-x"), and that
// can't spoof another name in a status page (no right-to-left overrides,
// zero-width or look-alike characters). host:port and IPv4 addresses are
// valid IDs; an IPv6 address is one without its brackets. No ID contains a
// NUL, which the vnode names rely on (see terminator).
func ValidateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("ring: empty backend id: %w", ErrInvalidBackends)
	case len(id) > MaxIDLen:
		return fmt.Errorf("ring: backend id %q... of %d bytes: %w: at most %d", id[:32], len(id), ErrInvalidBackends, MaxIDLen)
	case id == "." || id == "..":
		return fmt.Errorf("ring: backend id %q: %w: may not be a dot or two", id, ErrInvalidBackends)
	case id[0] == '-':
		return fmt.Errorf("ring: backend id %q: %w: may not start with a dash", id, ErrInvalidBackends)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !idChar(c) {
			return fmt.Errorf("ring: backend id %q: %w: byte %#02x at %d is not one of A-Z a-z 0-9 . _ : -", id, ErrInvalidBackends, c, i)
		}
	}
	return nil
}

func idChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
}

// member is a backend as the library sees it: its ID plus terminator. The
// index into the sorted member list rides along, so reading the owner
// table back costs a type assertion instead of a map lookup per partition.
type member struct {
	name  string
	index uint16
}

func (m member) String() string { return m.name }

// Ring is an immutable consistent-hash ring. All methods are safe for
// concurrent use; a nil *Ring behaves as an empty ring with no config.
type Ring struct {
	cfg     Config
	seed    uint64
	parts   uint64
	members []string // sorted
	owners  []uint16 // partition → index into members
	// The vnode circle as the library builds it, kept for Candidates: the
	// high 32 bits of the hashes, ascending, and the member index of each.
	// 6 bytes a vnode instead of 10 keeps a ring of 1000 backends × 1000
	// vnodes at 6 MB; the walk then starts one vnode early when a vnode
	// and the partition share their high 32 bits (at 10⁶ vnodes, about
	// one partition in 4000), which only lists one more candidate first.
	vnodeHi     []uint32
	vnodeMember []uint16
	fp          uint64
	weights     []int // parallel to members; nil when every weight is 1
}

// Build returns the ring for cfg and the backend ids, given in any order.
// Every node that builds from the same config and the same set of ids gets
// the same partition table. Build checks everything the library would
// panic on first and returns an error instead; zero ids give a valid empty
// ring whose lookups return ErrEmpty.
func Build(cfg Config, ids []string) (*Ring, error) {
	r, err := newRing(cfg, ids)
	if err != nil || len(r.members) == 0 {
		return r, err
	}
	if err := checkRoom(r.cfg, len(r.members)); err != nil {
		return nil, err
	}
	if r.cfg.Algorithm == AlgorithmV2 {
		_, err = r.buildV2(true)
	} else {
		err = r.buildV1()
	}
	if err != nil {
		return nil, err
	}
	r.fp = r.fingerprint()
	return r, nil
}

// newRing checks cfg and ids and returns a ring with its members but no
// table yet, except for zero ids: a finished empty ring.
func newRing(cfg Config, ids []string) (*Ring, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := len(ids)
	if n > MaxMembers {
		return nil, fmt.Errorf("ring: %d backends: %w: at most %d", n, ErrInvalidBackends, MaxMembers)
	}
	for _, id := range ids {
		if err := ValidateID(id); err != nil {
			return nil, err
		}
	}
	members := slices.Clone(ids)
	slices.Sort(members)
	for i := 1; i < n; i++ {
		if members[i] == members[i-1] {
			return nil, fmt.Errorf("ring: duplicate backend id %q: %w", members[i], ErrInvalidBackends)
		}
	}
	r := &Ring{
		cfg:     cfg,
		seed:    deriveSeed(cfg.Seed),
		parts:   uint64(cfg.Partitions),
		members: members,
	}
	if n == 0 {
		r.fp = r.fingerprint()
	}
	return r, nil
}

// buildV1 is the table of one library ring over every backend, computed
// by the library's own walk on the circle (walk.go).
func (r *Ring) buildV1() error {
	c, err := circleFor(r.members, r.cfg.ReplicationFactor, r.seed)
	if err != nil {
		return err
	}
	r.vnodeHi, r.vnodeMember = c.hi, c.owners
	r.owners, err = walkOwners(c, r.cfg.Partitions, r.cfg.Load)
	return err
}

// libraryOwners calls the library once, on input it cannot panic on (the
// caller has checked room and vnode collisions), and returns each
// partition's owner as an index into members.
func libraryOwners(members []string, h consistent.Hasher, partitions, rf int, load float64) ([]uint16, error) {
	lib := make([]consistent.Member, len(members))
	for i, id := range members {
		lib[i] = member{name: id + terminator, index: uint16(i)}
	}
	c := consistent.New(lib, consistent.Config{
		Hasher:            h,
		PartitionCount:    partitions,
		ReplicationFactor: rf,
		Load:              load,
	})
	owners := make([]uint16, partitions)
	for p := range owners {
		m := c.GetPartitionOwner(p)
		if m == nil {
			return nil, fmt.Errorf("ring: library left partition %d without owner", p)
		}
		mm, ok := m.(member)
		if !ok {
			return nil, fmt.Errorf("ring: library assigned partition %d to unknown member %q", p, m.String())
		}
		owners[p] = mm.index
	}
	return owners, nil
}

// CheckCapacity reports whether a ring of n backends can be built with cfg,
// without building it: the admin API refuses an addition that would leave
// every node unable to rebuild.
func CheckCapacity(cfg Config, n int) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if n > MaxMembers {
		return fmt.Errorf("ring: %d backends: %w: at most %d", n, ErrInvalidBackends, MaxMembers)
	}
	if n == 0 {
		return nil
	}
	return checkRoom(cfg, n)
}

// checkRoom mirrors the library's panics that depend on the number of
// backends n (cfg already valid, so RF ≥ 2 and the walk reaches every
// member): "not enough room to distribute partitions" exactly when
// n × ceil(float64(P/n) × Load) < P, P/n in integers; and the build cost.
func checkRoom(cfg Config, n int) error {
	if cfg.Algorithm == AlgorithmV2 {
		return checkRoomV2(cfg, n)
	}
	p := cfg.Partitions
	if n > p {
		return fmt.Errorf("ring: %d backends exceed %d partitions: %w", n, p, ErrInvalidBackends)
	}
	perMember := math.Ceil(float64(p/n) * cfg.Load) // exactly the library's averageLoad
	if float64(n)*perMember < float64(p) {
		return fmt.Errorf("ring: %d backends × at most %v partitions each (load %v) can't hold %d partitions: %w: raise load or change partitions",
			n, perMember, cfg.Load, p, ErrInvalidBackends)
	}
	if v := n * cfg.ReplicationFactor; v > MaxVnodes {
		return fmt.Errorf("ring: %d backends × %d vnodes = %d: %w: at most %d; lower the replication factor",
			n, cfg.ReplicationFactor, v, ErrInvalidBackends, MaxVnodes)
	}
	return nil
}

// radixSort sorts keys ascending and carries vals along: an LSD radix sort
// in four 16-bit passes. At 1000 backends × 1000 vnodes it takes a tenth
// of the time slices.SortFunc took on (hash, member) pairs (the v2 build
// spent a third of its time there).
func radixSort(keys []uint64, vals []uint16) {
	n := len(keys)
	if n < 2 {
		return
	}
	k2, v2 := make([]uint64, n), make([]uint16, n)
	var count [1 << 16]int
	for shift := uint(0); shift < 64; shift += 16 {
		clear(count[:])
		for _, k := range keys {
			count[(k>>shift)&0xffff]++
		}
		sum := 0
		for d, c := range count {
			count[d] = sum
			sum += c
		}
		for i, k := range keys {
			d := (k >> shift) & 0xffff
			k2[count[d]], v2[count[d]] = k, vals[i]
			count[d]++
		}
		keys, k2 = k2, keys
		vals, v2 = v2, vals
	}
	// Four passes: the sorted data is back in the caller's slices.
}

const tableDomain = "meshlb/ring/table/v1\x00"

// fingerprint hashes the config fingerprint, the sorted members and the
// partition table, so nodes whose library version built a different table
// from the same inputs disagree visibly.
func (r *Ring) fingerprint() uint64 {
	h := sha256.New()
	h.Write([]byte(tableDomain))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], r.cfg.Fingerprint())
	h.Write(b[:])
	binary.LittleEndian.PutUint64(b[:], uint64(len(r.members)))
	h.Write(b[:])
	for _, id := range r.members {
		binary.LittleEndian.PutUint64(b[:], uint64(len(id)))
		h.Write(b[:])
		h.Write([]byte(id))
	}
	binary.LittleEndian.PutUint64(b[:], uint64(len(r.owners)))
	h.Write(b[:])
	table := make([]byte, 2*len(r.owners))
	for p, o := range r.owners {
		binary.LittleEndian.PutUint16(table[2*p:], o)
	}
	h.Write(table)
	r.hashWeights(h)
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// Locate returns the backend that owns key and the key's partition. It
// does not allocate. On an empty ring it returns ErrEmpty with the
// partition still computed (-1 on a nil ring).
func (r *Ring) Locate(key []byte) (id string, partition int, err error) {
	if r == nil || r.parts == 0 { // a zero Ring, not from Build
		return "", -1, ErrEmpty
	}
	p := sum64(key, r.seed) % r.parts
	if len(r.members) == 0 {
		return "", int(p), ErrEmpty
	}
	return r.members[r.owners[p]], int(p), nil
}

// LocateString is Locate for a string key; it does not allocate either.
func (r *Ring) LocateString(key string) (id string, partition int, err error) {
	if r == nil || r.parts == 0 {
		return "", -1, ErrEmpty
	}
	p := sum64String(key, r.seed) % r.parts
	if len(r.members) == 0 {
		return "", int(p), ErrEmpty
	}
	return r.members[r.owners[p]], int(p), nil
}

// Partition returns the partition of key: xxh64(key) % Partitions
// (-1 on a nil ring).
func (r *Ring) Partition(key []byte) int {
	if r == nil || r.parts == 0 {
		return -1
	}
	return int(sum64(key, r.seed) % r.parts)
}

// Owner returns the backend that owns partition, or "" if the ring is
// empty or partition is out of range.
func (r *Ring) Owner(partition int) string {
	if r == nil || partition < 0 || partition >= len(r.owners) {
		return ""
	}
	return r.members[r.owners[partition]]
}

// Candidates returns up to n distinct backends for key in failover order:
// the owner, then the other backends in the order the library's
// bounded-load walk meets them, clockwise on the vnode circle from the
// partition's point. Candidates[1] is thus the backend most likely to own
// the partition once the owner is removed. The length is min(n, Len()).
func (r *Ring) Candidates(key []byte, n int) []string {
	if r == nil || len(r.members) == 0 || n <= 0 {
		return nil
	}
	return r.candidates(r.Partition(key), n)
}

func (r *Ring) candidates(p, n int) []string {
	n = min(n, len(r.members))
	out := make([]string, 0, n)
	owner := r.owners[p]
	out = append(out, r.members[owner])
	if n == 1 {
		return out
	}
	seen := make([]bool, len(r.members))
	seen[owner] = true
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(p))
	start, _ := slices.BinarySearch(r.vnodeHi, uint32(sum64(b[:], r.seed)>>32))
	total := len(r.vnodeHi)
	for k := 0; k < total && len(out) < n; k++ {
		i := start + k
		if i >= total {
			i -= total
		}
		m := r.vnodeMember[i]
		if !seen[m] {
			seen[m] = true
			out = append(out, r.members[m])
		}
	}
	return out
}

// Members returns a sorted copy of the backend IDs.
func (r *Ring) Members() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.members)
}

// Len returns the number of backends.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.members)
}

// Partitions returns the number of partitions.
func (r *Ring) Partitions() int {
	if r == nil {
		return 0
	}
	return int(r.parts)
}

// Config returns the config the ring was built with, defaults filled.
func (r *Ring) Config() Config {
	if r == nil {
		return Config{}
	}
	return r.cfg
}

// Fingerprint identifies the ring across the mesh: a hash of
// Config().Fingerprint(), the sorted members and the partition table. Two
// nodes agree on placement exactly when their fingerprints match.
func (r *Ring) Fingerprint() uint64 {
	if r == nil {
		return 0
	}
	return r.fp
}

// Loads returns the number of partitions each backend owns.
func (r *Ring) Loads() map[string]int {
	if r == nil {
		return map[string]int{}
	}
	out := make(map[string]int, len(r.members))
	for _, id := range r.members {
		out[id] = 0
	}
	for _, o := range r.owners {
		out[r.members[o]]++
	}
	return out
}

// keepCircle keeps the circle's high hash bits and members for Candidates.
func (r *Ring) keepCircle(hashes []uint64, members []uint16) {
	r.vnodeHi = make([]uint32, len(hashes))
	for i, h := range hashes {
		r.vnodeHi[i] = uint32(h >> 32)
	}
	r.vnodeMember = members
}

// ceilLoad is the library's per-member bound for an integer mean.
func ceilLoad(mean int, load float64) float64 { return math.Ceil(float64(mean) * load) }
