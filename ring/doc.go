// Package ring maps routing keys to backends with a consistent-hash ring
// that every meshlb node builds on its own and gets identical.
//
// ring owns the pure part of routing: validating backend IDs and ring
// parameters, building an immutable ring from a config and a member list
// (Build), looking keys up (Locate, LocateString), listing failover
// candidates (Candidates) and fingerprinting config and ring so nodes can
// tell whether the mesh agrees. It does no I/O, starts no goroutines and
// logs nothing; callers rebuild a ring on every membership change and swap
// it in with an atomic.Pointer. A *Ring is never modified after Build, so
// all its methods are safe for concurrent use, and a nil *Ring behaves as
// an empty one.
//
// # Guarantees
//
//   - Determinism: the same Config and the same set of IDs give the same
//     partition table and Fingerprint on every node, architecture and run,
//     whatever order the IDs were learned in, and whatever was built
//     before. Members are sorted and de-duplicated, the library is only
//     called through New (never Add or Remove), the names it sees are
//     unambiguous (see terminator), and the build caches (cache.go) hold
//     only values that are functions of their keys.
//   - No panics: Build checks everything github.com/buraksezer/consistent
//     v0.10.0 would panic on (members > partitions, "not enough room to
//     distribute partitions", replication factor 1, NaN or negative load,
//     empty member list) and returns a wrapped error instead. Bounds on
//     partitions, vnodes, members and N²·vnodes keep hostile input from
//     costing minutes or gigabytes.
//   - Hashing: a key's partition is XXH64(key) % Partitions, keyed with a
//     seed derived from Config.Seed (SHA-256 of the secret) when set. The
//     same hash places the vnodes, so without the secret nobody can aim
//     keys at a chosen backend.
//   - Lookups read two slices (partition → member index, sorted members):
//     about 9 ns and no allocations, and they never call the library.
//   - Bounded load: no backend owns more than ceil(Partitions/N × Load)
//     partitions (v2: the same cap inside each group of two or more, where the
//     group has room for it; a backend alone in its group is uncapped). With the defaults, one backend joining or leaving moves
//     about its fair share of keys (1.00–1.03 × on average) and almost
//     none between the others (≤ 0.04 %).
//
// # Algorithms
//
// Config.Algorithm chooses how the library is used. v1 (the default) is
// one library ring over every backend: the library re-sorts all vnodes
// after each member it adds, so a build costs about N²·RF (0.4 s at 100
// backends, 50 s at 1000). v2 (grouped.go) keeps v1's vnode circle, sends
// each partition to the group of its first vnode clockwise, and runs one
// small library ring per group of backends (256 groups by ID hash) that
// applies the load bound inside the group. Without a binding bound the
// two give the same table; v2 builds 25× (100 backends) to 80× (1000)
// faster from scratch, and a rebuild after one change reuses the last
// circle and the unchanged groups (DEFAULTS.md). The algorithm is part of
// the config fingerprint: a mesh runs one algorithm at a time.
//
// The defaults and the measurements behind them are in DEFAULTS.md.
package ring
