package gossip

import (
	"time"

	"github.com/hashicorp/memberlist"
)

// The delegates below are memberlist's callbacks. memberlist calls them
// under its own locks, on its packet and probe paths, so each one copies what
// it needs, works under c.mu briefly and signals without blocking.

var (
	_ memberlist.Delegate       = &delegate{}
	_ memberlist.EventDelegate  = &eventDelegate{}
	_ memberlist.PingDelegate   = &pingDelegate{}
	_ memberlist.NamedBroadcast = &entryBroadcast{}
)

// delegate carries the replicated state: deltas as user messages, full
// state in push/pull, and our node meta.
type delegate struct{ c *Cluster }

func (d *delegate) NodeMeta(limit int) []byte       { return d.c.nodeMeta(limit) }
func (d *delegate) NotifyMsg(b []byte)              { d.c.notifyMsg(b) }
func (d *delegate) GetBroadcasts(o, l int) [][]byte { return d.c.getBroadcasts(o, l) }
func (d *delegate) LocalState(join bool) []byte     { return d.c.localState(join) }
func (d *delegate) MergeRemoteState(b []byte, join bool) {
	d.c.mergeRemoteState(b, join)
}

// eventDelegate tracks membership.
type eventDelegate struct{ c *Cluster }

func (e *eventDelegate) NotifyJoin(n *memberlist.Node)   { e.c.notifyJoin(nodeOf(n)) }
func (e *eventDelegate) NotifyLeave(n *memberlist.Node)  { e.c.notifyLeave(nodeOf(n)) }
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { e.c.notifyUpdate(nodeOf(n)) }

// pingDelegate puts the catalog digest in every ack and compares the peer's.
type pingDelegate struct{ c *Cluster }

func (p *pingDelegate) AckPayload() []byte { return p.c.ackPayload() }
func (p *pingDelegate) NotifyPingComplete(n *memberlist.Node, _ time.Duration, payload []byte) {
	p.c.notifyPingComplete(n.Name, n.Address(), payload)
}

// entryBroadcast is one delta in our TransmitLimitedQueue, named by kind
// and key so that a newer version replaces a queued older one.
type entryBroadcast struct {
	name string
	msg  []byte
}

func (b *entryBroadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
func (b *entryBroadcast) Name() string    { return b.name }
func (b *entryBroadcast) Message() []byte { return b.msg }
func (b *entryBroadcast) Finished()       {}

// nodeInfo is what we copy out of a *memberlist.Node.
type nodeInfo struct {
	metaErr error // the meta did not decode: another version, or garbage
	name    string
	addr    string
	meta    []byte
	decoded Meta
	state   NodeState // 0 if the meta does not decode
}

func nodeOf(n *memberlist.Node) nodeInfo {
	ni := nodeInfo{name: n.Name, addr: n.Address(), meta: append([]byte(nil), n.Meta...)}
	m, err := DecodeMeta(n.Meta)
	if err == nil {
		ni.state = m.State
	}
	ni.decoded, ni.metaErr = m, err
	return ni
}

func (n nodeInfo) peer() peer {
	return peer{addr: n.addr, meta: n.meta, state: n.state, decoded: n.decoded, metaErr: n.metaErr}
}

func (c *Cluster) nodeMeta(limit int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.metaBytes) > limit { // unreachable: Encode caps meta far lower
		c.log.Error().Int("len", len(c.metaBytes)).Int("limit", limit).Msg("node meta too long")
		return nil
	}
	return append([]byte(nil), c.metaBytes...)
}

func (c *Cluster) notifyMsg(b []byte) {
	e, err := decodeEntryMsg(b)
	if err != nil {
		c.rejected("entry", err)
		return
	}
	kind := c.kindName(e.Kind)
	now := time.Now()
	c.mu.Lock()
	changed, err := c.mergeRemoteLocked(e, now, true)
	if changed {
		c.noteLocked()
	}
	c.mu.Unlock()
	if err != nil {
		c.rejected(kind, err)
		return
	}
	c.m.received.WithLabelValues(kind).Inc()
	if changed {
		c.m.relayed.Inc()
		c.m.propagation.Observe(max(0, now.Sub(e.Time()).Seconds()))
		c.signal()
	}
}

func (c *Cluster) getBroadcasts(overhead, limit int) [][]byte {
	msgs := c.queue.GetBroadcasts(overhead, limit)
	if len(msgs) > 0 {
		c.m.sent.WithLabelValues("entry").Add(float64(len(msgs)))
	}
	return msgs
}

// localState is never empty: memberlist skips MergeRemoteState for an empty
// remote state, and the header names the sender.
func (c *Cluster) localState(bool) []byte {
	c.mu.Lock()
	b := encodeStateMsg(c.cfg.Name, c.store.state(c.cfg.SecretKey != nil))
	c.mu.Unlock()
	c.m.sent.WithLabelValues("state").Inc()
	return b
}

// mergeRemoteState merges a peer's full state. Of what it brings, only the
// first maxRelayFromState entries are re-broadcast (digests and push/pull
// carry the rest), except for kinds marked RelayAll. Entries of kinds this
// node doesn't know are skipped and counted, so a newer release can add a
// kind during a rolling upgrade.
func (c *Cluster) mergeRemoteState(b []byte, _ bool) {
	sender, entries, err := decodeStateMsg(b)
	if err != nil {
		c.rejected("state", err)
		return
	}
	c.m.received.WithLabelValues("state").Inc()
	wasSynced := c.synced.Load()
	now := time.Now()
	var fresh []Entry
	var errs []error
	unknown, relayed := 0, 0
	c.mu.Lock()
	for _, e := range entries {
		relay := relayed < maxRelayFromState || c.specs[e.Kind].RelayAll
		changed, err := c.mergeRemoteLocked(e, now, relay)
		switch {
		case isUnknownKind(err):
			unknown++
		case err != nil:
			errs = append(errs, err)
		}
		if changed {
			fresh = append(fresh, e)
			if relay {
				relayed++
			}
		}
	}
	if len(fresh) > 0 {
		c.noteLocked()
	}
	c.mu.Unlock()
	for _, err := range errs {
		c.rejected("state", err)
	}
	if unknown > 0 {
		c.m.rejected.WithLabelValues(reasonKind).Add(float64(unknown))
		c.log.Debug().Str("peer", sender).Int("entries", unknown).Msg("full state holds kinds this release does not know; skipped")
	}
	if sender != c.cfg.Name {
		c.synced.Store(true)
	}
	if len(fresh) > 0 {
		c.m.relayed.Add(float64(relayed))
		if wasSynced { // a repair, not the first download of the state
			for _, e := range fresh {
				c.m.propagation.Observe(max(0, now.Sub(e.Time()).Seconds()))
			}
		}
		c.signal()
	}
}

func (c *Cluster) notifyJoin(n nodeInfo) {
	if n.metaErr != nil {
		c.rejected("meta", n.metaErr)
	}
	c.mu.Lock()
	c.peers[n.name] = n.peer()
	c.peersGen++
	delete(c.failed, n.name)
	count := len(c.peers)
	c.numNodes.Store(int64(count))
	c.mu.Unlock()
	c.m.members.Set(float64(count))
	if n.name != c.cfg.Name {
		c.log.Info().Str("peer", n.name).Str("addr", n.addr).Int("members", count).Msg("member joined")
	}
	c.signal()
}

// notifyLeave cannot tell a crash from a leave (memberlist never fills in
// Node.State): a member whose last meta said NodeLeaving left and is
// forgotten; any other is remembered for the rejoin loop.
func (c *Cluster) notifyLeave(n nodeInfo) {
	if n.name == c.cfg.Name {
		return // our own Leave: we still list ourselves
	}
	c.mu.Lock()
	p, known := c.peers[n.name]
	delete(c.peers, n.name)
	c.peersGen++
	leaving := n.state == NodeLeaving || (known && p.state == NodeLeaving)
	if leaving {
		delete(c.failed, n.name)
	} else {
		c.failed[n.name] = failedPeer{addr: n.addr, since: time.Now()}
	}
	count := len(c.peers)
	c.numNodes.Store(int64(count))
	c.mu.Unlock()
	c.m.members.Set(float64(count))
	c.log.Info().Str("peer", n.name).Str("addr", n.addr).Bool("left", leaving).
		Int("members", count).Msg("member gone")
	c.signal()
}

func (c *Cluster) notifyUpdate(n nodeInfo) {
	if n.metaErr != nil {
		c.rejected("meta", n.metaErr)
	}
	c.mu.Lock()
	if _, ok := c.peers[n.name]; ok {
		c.peers[n.name] = n.peer()
		c.peersGen++
	}
	c.mu.Unlock()
	c.signal()
}

func (c *Cluster) ackPayload() []byte {
	c.m.sent.WithLabelValues("ack").Inc()
	return encodeAckMsg(c.digest.Load())
}

func (c *Cluster) notifyPingComplete(name, addr string, payload []byte) {
	if len(payload) == 0 {
		return // a peer without our ping delegate
	}
	d, err := decodeAckMsg(payload)
	if err != nil {
		c.rejected("ack", err)
		return
	}
	c.m.received.WithLabelValues("ack").Inc()
	mine := c.digest.Load()
	if d == mine || c.knownDigest(d) {
		return // same, or a state we had: the peer is behind and pulls itself
	}
	select {
	case c.repairCh <- repairRequest{peer: name, addr: addr, digest: d, mine: mine, seen: time.Now()}:
	default: // a repair is already pending
	}
}
