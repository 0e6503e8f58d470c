package ring

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Defaults, chosen by the sweep in bench_test.go (TestRingSweep); the
// figures and the reasons are in DEFAULTS.md. They meet every movement,
// balance and lookup target at N ≤ 100; the library's build cost makes
// them miss the N = 1000 build target (about 45 s instead of 10 s).
const (
	// DefaultPartitions is prime, as the library advises, so that
	// hash % Partitions uses every bit of the hash. 65521 gives 655
	// partitions per backend at N = 100, a grain fine enough for the
	// balance targets (and a better minimum than 32749 at the same RF),
	// in a 128 KiB owner table.
	DefaultPartitions = 65521
	// DefaultReplicationFactor is the number of vnodes per member. Bounded
	// load caps the busiest backend but does nothing for the idlest, whose
	// share varies as 1/√RF: at N = 100 min/mean was 0.75 at RF 200, 0.82
	// at 500, 0.84 at 700 and 0.87 at 1000. The price is build time: the
	// library re-sorts all vnodes after every member (≈ N²·RF).
	DefaultReplicationFactor = 1000
	// DefaultLoad caps every member at ceil(Partitions/N × Load)
	// partitions (bounded-load consistent hashing). 1.10 keeps max/mean
	// at 1.11; below about 1.08 a capped member's overflow cascades onto
	// its neighbours and a join or leave moves keys between backends that
	// did not change; at 1.15 the cap no longer holds max/mean ≤ 1.15.
	DefaultLoad = 1.10
)

// Upper bounds. Config and membership arrive by gossip and admin API; these
// keep a hostile or mistaken value from costing a node minutes of CPU or
// gigabytes of memory in the library, which has no limits of its own.
const (
	// MaxPartitions bounds the owner table (2 bytes per partition here,
	// about 60 bytes in the library's map) and the distribution loop.
	MaxPartitions = 1 << 20
	// MaxReplicationFactor bounds the vnodes per member; with
	// MaxBuildWork it keeps the vnode circle under about 1.4 million
	// entries (about 100 MB in the library at worst).
	MaxReplicationFactor = 2000
	// MaxLoad bounds the load factor; beyond a few the bound no longer
	// binds and the ring is plain consistent hashing.
	MaxLoad = 100.0
	// MaxMembers is the most backends a ring holds; owners are stored as
	// uint16 indexes into the sorted member list.
	MaxMembers = 1<<16 - 1
	// MaxBuildWork bounds Σ(group size²) × ReplicationFactor of a v2
	// build, whose library rings cost about that: the library's New
	// appends each member's vnodes and re-sorts the whole set. (It bounded
	// v1 at N² × RF too, hence at 1000 backends, until v1's table came
	// from the library's walk on the circle: walk.go.)
	MaxBuildWork = 1e9
	// MaxVnodes bounds the vnode circle of a ring, Members ×
	// ReplicationFactor (weighted: Σ weight × 4 × ReplicationFactor): 14
	// bytes a vnode while it is built and cached, 6 kept by the ring. At
	// the default RF it admits 4194 backends.
	MaxVnodes = 1 << 22
	// MaxSeedLen bounds the secret's length.
	MaxSeedLen = 1024
)

// Algorithms. The algorithm decides placement as much as the numbers do:
// it is part of the config fingerprint, and every node of a mesh must run
// the same one (see DEFAULTS.md, "Changing the algorithm of a mesh").
const (
	// AlgorithmV1 is one library ring over all backends: the table
	// consistent.New gives, computed by its own walk on a circle that
	// rebuilds merge into (walk.go): 8 ms at 100 backends and 65 ms at
	// 1000 with the defaults, where New takes 0.4 s and 50 s.
	AlgorithmV1 = "v1"
	// AlgorithmV2 is the grouped ring (grouped.go): v1's vnode circle,
	// backends hashed into 256 groups, one small library ring per group
	// that applies the load bound inside it. Same placement as v1 while no
	// bound binds. It was the fast one until v1's build stopped calling
	// New on the whole set; v1 now builds faster at every size, and v2
	// stays for the meshes that switched to it (DEFAULTS.md).
	AlgorithmV2 = "v2"
	// DefaultAlgorithm stays v1, so that a binary upgrade never changes
	// placement by itself: with v2 as the default, old and new nodes would
	// disagree during every rolling upgrade (0.13 % of keys at 100
	// backends, 0.37 % at 300) and report config_agreed false until the
	// last node is done. A mesh changes algorithm on purpose.
	DefaultAlgorithm = AlgorithmV1
)

// V2MaxMembers bounds a v2 ring. Its groups grow as N/256 and a library
// ring costs members²·vnodes, so the build grows about linearly up to
// here (N·RF vnodes to hash and sort) and then quadratically.
const V2MaxMembers = 4096

// Sentinel errors that Build and Validate wrap, for callers that branch on
// the kind of failure (a bad config is an operator error everywhere in the
// mesh; bad backends concern one catalog entry).
var (
	// ErrEmpty is returned by lookups on a ring without backends.
	ErrEmpty = errors.New("ring: no backends")
	// ErrInvalidConfig is wrapped by every config error.
	ErrInvalidConfig = errors.New("invalid ring config")
	// ErrInvalidBackends is wrapped by every error about the backend list.
	ErrInvalidBackends = errors.New("invalid backends")
)

// Config holds the ring parameters. They must be identical on every node of
// a mesh (compare Fingerprint), or nodes route the same key differently.
// A zero field means its default.
type Config struct {
	// Partitions is the number of hash partitions; a key's partition is
	// xxh64(key) % Partitions. Default DefaultPartitions, at most
	// MaxPartitions, and never fewer than the number of backends.
	Partitions int
	// ReplicationFactor is the number of vnodes per backend. Default
	// DefaultReplicationFactor; 2..MaxReplicationFactor. 1 is rejected:
	// the library's bounded-load walk visits all vnodes but one and
	// panics when the one it skips was the only member with room.
	ReplicationFactor int
	// Load is the bounded-load factor: no backend owns more than
	// ceil(Partitions/N × Load) partitions. Default DefaultLoad;
	// finite, 1..MaxLoad.
	Load float64
	// Seed is an optional mesh-wide secret that keys the hash, so that
	// clients can't aim keys at one backend. "" means unkeyed XXH64.
	Seed string
	// Algorithm is AlgorithmV1 or AlgorithmV2; default DefaultAlgorithm.
	// Both take the same numbers: v2 uses v1's vnodes and partitions and
	// applies Load inside each group.
	Algorithm string
}

// DefaultConfig returns the measured defaults (see DEFAULTS.md).
func DefaultConfig() Config {
	return Config{
		Partitions:        DefaultPartitions,
		ReplicationFactor: DefaultReplicationFactor,
		Load:              DefaultLoad,
		Algorithm:         DefaultAlgorithm,
	}
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Algorithm == "" {
		c.Algorithm = DefaultAlgorithm
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.Load == 0 { // also -0
		c.Load = DefaultLoad
	}
	return c
}

// Validate checks the config alone, zero fields meaning their defaults.
// Build also checks it against the number of backends.
func (c Config) Validate() error {
	c = c.WithDefaults()
	switch {
	case c.Partitions < 1:
		return fmt.Errorf("ring: partitions %d: %w: must be positive", c.Partitions, ErrInvalidConfig)
	case c.Partitions > MaxPartitions:
		return fmt.Errorf("ring: partitions %d: %w: at most %d", c.Partitions, ErrInvalidConfig, MaxPartitions)
	case c.ReplicationFactor < 1:
		return fmt.Errorf("ring: replication factor %d: %w: must be positive", c.ReplicationFactor, ErrInvalidConfig)
	case c.ReplicationFactor == 1:
		return fmt.Errorf("ring: replication factor 1: %w: at least 2 (with 1 vnode per backend the library can skip the only backend with room and panic)", ErrInvalidConfig)
	case c.ReplicationFactor > MaxReplicationFactor:
		return fmt.Errorf("ring: replication factor %d: %w: at most %d", c.ReplicationFactor, ErrInvalidConfig, MaxReplicationFactor)
	case math.IsNaN(c.Load) || math.IsInf(c.Load, 0):
		return fmt.Errorf("ring: load %v: %w: must be finite", c.Load, ErrInvalidConfig)
	case c.Load < 1:
		return fmt.Errorf("ring: load %v: %w: at least 1 (it bounds a backend's share relative to the mean)", c.Load, ErrInvalidConfig)
	case c.Load > MaxLoad:
		return fmt.Errorf("ring: load %v: %w: at most %v", c.Load, ErrInvalidConfig, MaxLoad)
	case len(c.Seed) > MaxSeedLen:
		return fmt.Errorf("ring: seed of %d bytes: %w: at most %d", len(c.Seed), ErrInvalidConfig, MaxSeedLen)
	case c.Algorithm != AlgorithmV1 && c.Algorithm != AlgorithmV2:
		return fmt.Errorf("ring: algorithm %q: %w: %q or %q", c.Algorithm, ErrInvalidConfig, AlgorithmV1, AlgorithmV2)
	}
	return nil
}

// configDomain names the canonical encoding and the algorithm: change it
// whenever placement would change for the same config, so old and new
// nodes report different fingerprints instead of routing differently.
const configDomain = "meshlb/ring/config/v1:xxh64,vnode=id\\x00i,buraksezer-consistent\x00"

// configDomainV2 names the v2 algorithm and its fixed structure (the
// number of groups, how a backend's group is chosen); v1 keeps configDomain alone, so its
// fingerprints are the ones every existing mesh reports.
const configDomainV2 = "meshlb/ring/config/v2:grouped,groups=256,group=xxh64(domain+id),first-vnode,xxh64,vnode=id\\x00i,buraksezer-consistent\x00"

// Fingerprint identifies the config (defaults filled, seed included) across
// the mesh: the first 8 bytes, big-endian, of SHA-256 over a fixed-width
// little-endian encoding, so it is the same on every machine and
// architecture, and the seed can't be recovered from it.
func (c Config) Fingerprint() uint64 {
	c = c.WithDefaults()
	h := sha256.New()
	switch c.Algorithm {
	case AlgorithmV1:
		h.Write([]byte(configDomain))
	case AlgorithmV2:
		h.Write([]byte(configDomainV2))
	default: // invalid, but never equal to a valid config's
		h.Write([]byte("meshlb/ring/config/unknown:" + c.Algorithm + "\x00"))
	}
	var b [8]byte
	for _, v := range []uint64{uint64(c.Partitions), uint64(c.ReplicationFactor), math.Float64bits(c.Load), uint64(len(c.Seed))} {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	h.Write([]byte(c.Seed))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
