// Package gossip keeps a meshlb node in the mesh and replicates the mesh's
// state between nodes, on top of hashicorp/memberlist.
//
// It owns the memberlist configuration and its unexported delegates, the
// node metadata wire format ([Meta]), joining, periodic re-joining and
// leaving the mesh, and one replicator: a last-writer-wins store of
// [Entry] values keyed by ([Kind], key), with one merge rule, one wire
// format, one relay and repair path and one way to be told of changes
// ([Cluster.Subscribe]). The backend catalog ([Record], [Cluster.Upsert],
// [Cluster.SetState], [Cluster.Records]) is its one built-in kind. Every
// other kind is registered by its owner in [Config.Kinds] with a
// [KindSpec] (bounds, a validation rule, scoping to a backend, ownership)
// and is opaque bytes here: gossip knows nothing of health, rings, HTTP or
// routing.
//
// # Replication
//
// A write ([Cluster.Put], [Cluster.Update], [Cluster.Delete]) gets a
// hybrid-logical-clock version and is broadcast through memberlist's
// gossip; every node re-broadcasts an entry the first time it sees it,
// because memberlist does not relay user messages. The whole store also
// rides memberlist's periodic push/pull, and every ping ack carries a digest
// of it: a node whose digest differs from a peer's does a push/pull with
// that peer, so a missed broadcast is repaired within about one probe
// interval. Merge is commutative, associative and idempotent, so the order
// of delivery never matters; a deletion is a tombstone kept for
// Config.TombstoneTTL. A periodic re-join of seeds and of peers that failed
// (not of those that left) heals a mesh split by a partition longer than
// the failure detector's suspicion window.
//
// # Lifecycle
//
// New validates only; Start binds the gossip port (failing with the address
// named when it is taken) and joins the seeds in the background with
// backoff; Synced reports the first full-state exchange with a peer. To
// stop, call Leave (it announces NodeLeaving in the meta first, so peers
// forget this node instead of trying to re-join it) and then Shutdown. Both
// are idempotent, and any order of calls is safe: Leave after Shutdown
// returns an error instead of memberlist's panic.
//
// # Keyring
//
// With Config.SecretKey gossip is encrypted (memberlist's AES-GCM keyring;
// Config.ExtraKeys are read as well). [Cluster.InstallKey],
// [Cluster.UseKey] and [Cluster.RemoveKey] change this node's keyring
// live; carrying a rotation to every node, in the only order that works
// (install everywhere, use everywhere, remove), is the caller's job.
// Keys are named in logs by [KeyID], never shown.
//
// # Metrics
//
// With Config.Registerer set: meshlb_gossip_messages_{sent,received}_total
// {type} (the kind's name for entries, state, ack),
// meshlb_gossip_messages_rejected_total{reason},
// meshlb_gossip_records_relayed_total (entries re-broadcast on first sight),
// meshlb_gossip_anti_entropy_syncs_total{reason} and
// meshlb_gossip_anti_entropy_sync_errors_total{reason} (join, rejoin,
// digest), meshlb_gossip_members, meshlb_gossip_catalog_records{state},
// meshlb_gossip_propagation_delay_seconds and
// meshlb_gossip_memberlist_log_lines_total{level}.
//
// # Concurrency
//
// All methods of [Cluster] are safe for concurrent use. memberlist calls the
// delegates under its own locks, so they only copy, decode, merge under a
// short mutex of ours and signal without blocking; anything slow (push/pull
// repairs, joins, DNS) runs on goroutines owned by the Cluster. [Cluster.Start]
// starts them and [Cluster.Shutdown] stops memberlist and waits for all of
// them.
package gossip
