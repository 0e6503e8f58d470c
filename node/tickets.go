package node

import (
	"context"
	"crypto/rand"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/tlsconf"
)

// kindTicketKey holds the mesh's TLS session-ticket keys (tlsconf's
// format). Secret: the replicator neither writes nor accepts them without
// a gossip key, so they never travel in the clear.
const kindTicketKey gossip.Kind = 4

func ticketKeySpec() gossip.KindSpec {
	return gossip.KindSpec{
		Kind: kindTicketKey, Name: "ticket_key",
		// A deleted key's tombstone stays for the tombstone TTL (a day):
		// at the shortest rotation, one a minute, that is 1,440 of them,
		// some 100 bytes each.
		MaxValue: tlsconf.TicketValueLen, MaxEntries: 2048, MaxBytes: 256 << 10,
		Validate: tlsconf.ValidateTicketEntry,
		Secret:   true,
		RelayAll: true, // a node without the current key can resume nothing
	}
}

// ticketWait is how long a TLS listener waits for the mesh's ticket keys
// before it serves with keys of its own: past a first sync, a joining
// node that still has none is in a mesh whose minter is away.
func (n *Node) ticketWait() time.Duration { return max(2*n.cfg.SyncTimeout, 5*time.Second) }

// ticketLoop keeps the TLS listener's ticket keys those of the mesh, and,
// on the one node that mints (the lowest-named active member, as for
// health verdicts), makes and deletes keys on the rotation schedule. One
// minter means that keys never race: a key is made a whole period before
// it encrypts, so every node holds it by then.
func (n *Node) ticketLoop(ctx context.Context) {
	t := n.tls
	if n.cfg.Gossip.SecretKey == nil {
		t.log.Warn().Msg("tls session tickets use this node's own keys: a client resumes only through the node it came from; set a gossip key to share them mesh-wide")
		t.markReady()
		return
	}
	changes := n.cluster.Subscribe()
	tick := time.NewTicker(time.Second) // a new period starts on time
	defer tick.Stop()
	giveUp := time.NewTimer(n.ticketWait())
	defer giveUp.Stop()
	for {
		n.tickTickets(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		case <-giveUp.C:
			if !t.isReady() {
				t.log.Warn().Dur("waited", n.ticketWait()).Msg("no tls session-ticket keys from the mesh yet; serving with this node's own until they come")
				t.markReady()
			}
		}
	}
}

// tickTickets, on the minter, follows the rotation plan, then puts the
// keys held in use.
func (n *Node) tickTickets(now time.Time) {
	t := n.tls
	period := t.cfg.TicketRotate
	if n.cluster.Synced() && !n.draining.Load() && n.ticketMinter() == n.cfg.Name {
		var starts []time.Time
		for _, k := range n.ticketKeys() {
			starts = append(starts, k.Start)
		}
		mint, drop := tlsconf.TicketPlan(starts, now, period)
		for _, at := range mint {
			n.mintTicketKey(at)
		}
		for _, at := range drop {
			// Deleted without its bytes: a tombstone lives a day and would
			// otherwise carry an old key around the mesh that long.
			_, err := n.cluster.Update(kindTicketKey, tlsconf.TicketKeyName(at), func(cur gossip.Entry, ok bool) (gossip.Entry, bool, error) {
				if !ok || cur.Deleted {
					return cur, false, nil
				}
				return gossip.Entry{Deleted: true}, true, nil
			})
			if err != nil {
				t.log.Warn().Err(err).Time("start", at).Msg("delete old tls session-ticket key failed")
			}
		}
	}
	if sel, err := tlsconf.SelectTicketKeys(n.ticketKeys(), now, period); err == nil {
		t.setKeys(sel)
	}
}

func (n *Node) mintTicketKey(at time.Time) {
	var k [tlsconf.TicketKeyLen]byte
	_, _ = rand.Read(k[:]) // never fails (crypto/rand, Go 1.24+)
	_, err := n.cluster.Update(kindTicketKey, tlsconf.TicketKeyName(at), func(cur gossip.Entry, ok bool) (gossip.Entry, bool, error) {
		if ok && !cur.Deleted {
			return cur, false, nil // someone's key stands: never replace one
		}
		return gossip.Entry{Value: tlsconf.EncodeTicketKey(k)}, true, nil
	})
	if err != nil {
		n.tls.log.Error().Err(err).Time("start", at).Msg("make tls session-ticket key failed")
		return
	}
	n.tls.log.Info().Time("start", at).Msg("tls session-ticket key made")
}

// ticketKeys returns the keys the mesh holds (never their bytes in logs).
func (n *Node) ticketKeys() []tlsconf.TicketKey {
	var keys []tlsconf.TicketKey
	for _, e := range n.cluster.Entries(kindTicketKey) {
		if e.Deleted {
			continue
		}
		if k, err := tlsconf.DecodeTicketKey(e.Key, e.Value); err == nil {
			keys = append(keys, k)
		}
	}
	return keys
}

// ticketMinter is the lowest-named active balancer member.
func (n *Node) ticketMinter() string {
	for _, m := range n.cluster.Members() { // sorted by name
		if m.MetaErr == nil && m.Meta.Role == gossip.RoleBalancer && m.Meta.State == gossip.NodeActive {
			return m.Name
		}
	}
	return ""
}
