// Package meshacme owns what a mesh needs to get certificates from an ACME
// CA with no storage but its own nodes: which node orders a domain
// (rendezvous hash over the live members), the replicated formats of
// challenges, certificate chunks and per-domain records, the order itself
// (golang.org/x/crypto/acme), TLS-ALPN-01 challenge certificates built from
// a replicated key authorization, and the on-disk copy a restarting node
// serves from. It knows nothing of gossip: node/acme.go carries its values.
package meshacme
