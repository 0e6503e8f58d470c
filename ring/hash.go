package ring

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// XXH64 primes, as in the reference implementation and cespare/xxhash.
const (
	prime1 uint64 = 11400714785074694791
	prime2 uint64 = 14029467366897019727
	prime3 uint64 = 1609587929392839161
	prime4 uint64 = 9650029242287828579
	prime5 uint64 = 2870177450012600261
)

// seedDomain separates the hash seed from everything else derived from the
// same secret (the config fingerprint hashes the secret too), so publishing
// a fingerprint says nothing about the seed.
const seedDomain = "meshlb/ring/xxh64-seed/v1\x00"

// deriveSeed turns the mesh-wide secret into the XXH64 seed. An empty
// secret means seed 0, i.e. plain unkeyed XXH64.
func deriveSeed(secret string) uint64 {
	if secret == "" {
		return 0
	}
	h := sha256.New()
	h.Write([]byte(seedDomain))
	h.Write([]byte(secret))
	var sum [sha256.Size]byte
	return binary.LittleEndian.Uint64(h.Sum(sum[:0]))
}

// hasher is the one hash function of a ring: XXH64 keyed with the derived
// seed. It hashes keys, partition IDs and vnode names alike, and is handed
// to the library, so a secret seed also moves the vnodes: without it an
// outsider can neither predict a key's partition nor a partition's owner.
type hasher struct{ seed uint64 }

// Sum64 implements consistent.Hasher.
func (h hasher) Sum64(b []byte) uint64 { return sum64(b, h.seed) }

// sum64 is XXH64 with a seed. Seed 0 takes cespare/xxhash's assembly path;
// any other seed takes sum64Seeded, which returns the same values as
// xxhash.Digest.ResetWithSeed + Write + Sum64 (tested) without the 80-byte
// digest state, so a lookup stays allocation free and short.
func sum64(b []byte, seed uint64) uint64 {
	if seed == 0 {
		return xxhash.Sum64(b)
	}
	return sum64Seeded(b, seed)
}

// sum64String is sum64 for a string without copying it.
func sum64String(s string, seed uint64) uint64 {
	if seed == 0 {
		return xxhash.Sum64String(s)
	}
	// The bytes are only read, never kept or written.
	return sum64Seeded(unsafe.Slice(unsafe.StringData(s), len(s)), seed)
}

func round(acc, input uint64) uint64 {
	acc += input * prime2
	acc = bits.RotateLeft64(acc, 31)
	return acc * prime1
}

func mergeRound(acc, val uint64) uint64 {
	val = round(0, val)
	acc ^= val
	return acc*prime1 + prime4
}

// sum64Seeded is the one-shot XXH64 of b with the given seed.
func sum64Seeded(b []byte, seed uint64) uint64 {
	n := len(b)
	var h uint64
	if n >= 32 {
		v1 := seed + prime1 + prime2
		v2 := seed + prime2
		v3 := seed
		v4 := seed - prime1
		for len(b) >= 32 {
			v1 = round(v1, binary.LittleEndian.Uint64(b[0:8:len(b)]))
			v2 = round(v2, binary.LittleEndian.Uint64(b[8:16:len(b)]))
			v3 = round(v3, binary.LittleEndian.Uint64(b[16:24:len(b)]))
			v4 = round(v4, binary.LittleEndian.Uint64(b[24:32:len(b)]))
			b = b[32:len(b):len(b)]
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) +
			bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = mergeRound(h, v1)
		h = mergeRound(h, v2)
		h = mergeRound(h, v3)
		h = mergeRound(h, v4)
	} else {
		h = seed + prime5
	}
	h += uint64(n)
	for ; len(b) >= 8; b = b[8:] {
		h ^= round(0, binary.LittleEndian.Uint64(b[:8]))
		h = bits.RotateLeft64(h, 27)*prime1 + prime4
	}
	if len(b) >= 4 {
		h ^= uint64(binary.LittleEndian.Uint32(b[:4])) * prime1
		h = bits.RotateLeft64(h, 23)*prime2 + prime3
		b = b[4:]
	}
	for ; len(b) > 0; b = b[1:] {
		h ^= uint64(b[0]) * prime5
		h = bits.RotateLeft64(h, 11) * prime1
	}
	h ^= h >> 33
	h *= prime2
	h ^= h >> 29
	h *= prime3
	h ^= h >> 32
	return h
}
