// Package node owns one meshlb node: its configuration, the wiring of gossip,
// health, ring and the listeners, the single goroutine that turns gossip
// changes into ring rebuilds, readiness, the admin HTTP API and the
// lifecycle (start, drain, leave, shutdown).
//
// The kinds of replicated state besides the catalog are registered here
// (kinds.go), each with its owner's codec, and gossip is adapted to what
// health needs (mesh.go): gossip carries bytes, health decides, node
// wires the two.
//
// The request path and the change path meet only at one atomic pointer: a
// rebuild builds a fresh immutable ring off the hot path and swaps it in, so
// lookups never wait for a rebuild, however large the mesh.
//
// A request enters the node at the proxy listener. The acceptor
// (accept.go) reads each connection's request head: a WebSocket upgrade
// is served there, anything else goes to net/http; both end in the
// router's ServeHTTP, which asks the node's picker (proxy.go) for the
// key's backends in the current table. The relay of a WebSocket's bytes
// lives in the router (see package router); the node only drains it.
//
// node never parses flags, handles signals or exits the process; cmd/meshlb
// does that and hands node a Config.
package node
