// Package meshdns makes every meshlb node an authoritative DNS server for
// the mesh's own names, answering from the gossiped membership.
//
// The mesh already knows, within seconds, which nodes are alive, ready and
// not draining; DNS round robin in front of it should know no less. For
// each zone in [Config.Names] (ws.example.com, say) a node answers:
//
//   - A and AAAA at the zone's name: the advertised proxy addresses of every
//     live, ready, active node, at most [Config.MaxAnswers], a different
//     random subset in a different order per query, with [Config.TTL];
//   - SOA and NS at the zone's name, with glue, so that a parent zone can
//     delegate the name to the nodes ([Config.NS]);
//   - NXDOMAIN for other names inside the zone, REFUSED outside it.
//
// The answer set comes from one source, the member list and node meta
// that every node gossips ([Server.Update]), never from local probing, so
// every node gives the same set up to gossip delay.
//
// # Never an empty answer by mistake
//
// When no node qualifies (a partition, every node draining), the server
// answers the last set that had one, logs a warning and sets
// meshlb_dns_stale; before there ever was such a set, it answers every
// member it knows with an address. A node that is itself unready or
// draining, or that sees no peer while it had some recently (partitioned
// alone), answers what it knows with [MinTTL], so resolvers come back soon.
//
// # Abuse
//
// UDP responses are rate-limited per client address (IPv6 per /64), BIND
// style: past the limit most responses are dropped and every second one
// goes out truncated and empty, so a real client retries over TCP while a
// spoofed victim gets nothing larger than the query. Queries longer than
// [MaxQuery] and packets that do not parse as a single query are counted
// and dropped. TCP connections are bounded in number and time.
//
// # Lifecycle and concurrency
//
// New validates only; Start binds UDP and TCP on [Config.Addr]; Shutdown
// stops both and waits. Update and the query path are safe for concurrent
// use: queries read an immutable answer set through an atomic pointer.
package meshdns
