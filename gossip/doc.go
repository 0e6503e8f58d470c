// Package gossip keeps a meshlb node in the mesh and replicates the backend
// catalog between nodes, on top of hashicorp/memberlist.
//
// It owns the memberlist configuration and its unexported delegates, the
// backend catalog (a last-writer-wins map of [Record] keyed by backend ID,
// see [Catalog]) with its merge rules and binary wire format, the node
// metadata wire format ([Meta]), and joining, periodic re-joining and leaving
// the mesh. It knows nothing of rings, HTTP or routing: the node package reads
// [Cluster.Records] and [Cluster.Members] whenever [Cluster.Changes] fires and
// rebuilds its ring from them.
//
// # Replication
//
// A write (Upsert, SetState) gets a hybrid-logical-clock version and is
// broadcast through memberlist's gossip; every node re-broadcasts a record the
// first time it sees it, because memberlist does not relay user messages. The
// whole catalog also rides memberlist's periodic push/pull, and every ping ack
// carries a digest of the catalog: a node whose digest differs from a peer's
// does a push/pull with that peer, so a missed broadcast is repaired within
// about one probe interval. Merge is commutative, associative and idempotent,
// so the order of delivery never matters. A periodic re-join of seeds and of
// peers that failed (not of those that left) heals a mesh split by a partition
// longer than the failure detector's suspicion window.
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
// # Metrics
//
// With Config.Registerer set: meshlb_gossip_messages_{sent,received}_total
// {type}, meshlb_gossip_messages_rejected_total{reason},
// meshlb_gossip_records_relayed_total,
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
// them. [Catalog] is a plain value type and is not safe for concurrent use.
package gossip
