package node

import (
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
	"github.com/meshlb/meshlb/ring"
)

// The kinds of replicated state besides the catalog (gossip.KindBackend =
// 1). Every node of a mesh registers the same ones; the numbers are on the
// wire, so a number is never reused. A new kind goes here, with its owner's
// codec, and through the one replicator in gossip.
//
// Numbers taken: 1 catalog (gossip's), 2 observation, 3 verdict, 4 TLS
// session-ticket keys (tickets.go), 5 the nodes' load summaries
// (mesh_summary.go), 6 and 7 the gossip keyring's intents and each node's
// key status (keys.go), 8, 9 and 10 ACME challenges, certificate chunks
// and domain records (acme.go), 11 the affinity cookie's signing keys
// (affinity.go), 12 requests to close a backend's sessions
// (closesessions.go).
const (
	kindObservation gossip.Kind = 2 // health: one node's view of one backend
	kindVerdict     gossip.Kind = 3 // health: the mesh's decision on one backend
	kindKeyIntent   gossip.Kind = 6 // keys.go: a gossip key and its step (Secret)
	kindKeyStatus   gossip.Kind = 7 // keys.go: the key IDs one node holds
)

// Observations live an hour after their node left the mesh: the vote
// ignores them at once, and dropping them at once would let a peer's
// push/pull bring them back.
const observationTTL = time.Hour

// replicatedKinds returns the specs of the kinds above. Their byte bounds
// must add up to no more than gossip.KindsBudget (4 MiB; New refuses
// more): observations take 2.5 MiB (with 20-byte names, some 24,000, that
// is nodes × backends), verdicts 512 KiB (some 12,000 backends), load
// summaries 256 KiB (mesh_summary.go), ACME 160 KiB (acme.go), affinity
// keys 16 KiB (affinity.go), close requests 32 KiB (closesessions.go), and the rest (TestReplicatedKindsFit logs it)
// is left for the kinds to come.
func replicatedKinds() []gossip.KindSpec {
	backendOf := func(key string) string {
		id, _, _ := health.SplitObservationKey(key)
		return id
	}
	return append([]gossip.KindSpec{
		{
			Kind: kindObservation, Name: "observation",
			MaxValue: 1 + health.MaxDetailLen, MaxEntries: 200_000, MaxBytes: 5 << 19,
			Validate: func(key string, value []byte) error {
				o, err := health.DecodeObservation(key, value, time.Time{})
				if err != nil {
					return err
				}
				return ring.ValidateID(o.ID)
			},
			Backend: backendOf,
			Owned:   true, OwnerTTL: observationTTL,
		},
		{
			Kind: kindVerdict, Name: "verdict",
			MaxValue: 64, MaxEntries: 30_000, MaxBytes: 1 << 19,
			Validate: func(key string, value []byte) error {
				if err := ring.ValidateID(key); err != nil {
					return err
				}
				_, err := health.DecodeVerdict(key, value)
				return err
			},
			Backend: func(key string) string { return key },
			// Verdicts change rings: every new one is passed on.
			RelayAll: true,
		},
		ticketKeySpec(),     // 256 KiB of the 1 MiB left (tickets.go)
		loadSpec(),          // kind 5, 256 KiB (mesh_summary.go)
		affinityKeySpec(),   // kind 11, 16 KiB (affinity.go)
		closeSessionsSpec(), // kind 12, 32 KiB (closesessions.go)
	}, append(keyKinds(), acmeKinds()...)...)
}
