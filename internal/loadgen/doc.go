// Package loadgen owns `meshlb bench`: a load client and checker for a
// meshlb mesh. It opens many WebSocket sessions, each with its own session
// ID, spreads their connects over the nodes as DNS round robin would,
// reconnects through another node with backoff when a connection ends, and
// asks "whoami" periodically to learn which backend each session reached.
//
// The checker's question is the mesh's promise: a session keeps its backend
// through any node, unless the backend set changed. loadgen watches that set
// through a node's admin API (GET /v1/backends), and optionally probes the
// backends itself, so that it can tell a misroute (a session that met a
// different backend while the set stood still) from a legitimate move.
//
// loadgen owns: the session loop, node picking and DNS re-resolution, source
// address spreading on loopback, the backend-set watcher, latency
// histograms, move classification and the report (human table and JSON).
// It does not own: flags, exit codes or the process (cmd/meshlb does that),
// and it never imports the node, router, ring or gossip packages: it sees a
// mesh only as a client and an admin-API reader would.
//
// Run blocks until the run is over and returns only after every goroutine it
// started has returned.
package loadgen
