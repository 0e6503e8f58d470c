package gossip

import (
	"fmt"
	"time"
)

// Observe publishes this node's view of backend id. It is a no-op when the
// view (up and detail) is what this node last published. It returns
// ErrUnknownBackend for a backend the catalog holds as removed.
func (c *Cluster) Observe(id string, up bool, detail string) error {
	if c.closed() {
		return fmt.Errorf("observe %s: %w", id, ErrClosed)
	}
	if len(detail) > maxDetailLen {
		detail = detail[:maxDetailLen]
	}
	o := Observation{Node: c.cfg.Name, ID: id, Up: up, Detail: detail}
	if err := o.validate(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.tombstonedLocked(id) {
		c.mu.Unlock()
		return fmt.Errorf("observe %s: %w", id, ErrUnknownBackend)
	}
	if cur, ok := c.mine[id]; ok && cur.Up == up && cur.Detail == detail {
		c.mu.Unlock()
		return nil
	}
	if !c.health.obsFits(o) {
		c.mu.Unlock()
		return fmt.Errorf("observe %s: observations hold %d bytes, the limit", id, maxObsBytes)
	}
	c.writeObsLocked(o)
	c.mu.Unlock()
	c.signal()
	return nil
}

// writeObsLocked stamps o with a new version, keeps it as ours and
// broadcasts it.
func (c *Cluster) writeObsLocked(o Observation) {
	c.clock = max(c.clock+1, uint64(time.Now().UnixMilli())<<16)
	o.Version = c.clock
	c.mine[o.ID] = o
	c.health.mergeObs(o)
	c.broadcastLocked(obsName(o.Node, o.ID), encodeObsMsg(o))
	c.noteCatalogLocked()
}

func obsName(node, id string) string { return "o\x00" + node + "\x00" + id }

// SetVerdict publishes the mesh's health verdict for backend id, stamped
// with a new version and this node as its origin. It is a no-op when the
// verdict held decides alike (see Verdict.Same).
func (c *Cluster) SetVerdict(v Verdict) (Verdict, error) {
	if c.closed() {
		return Verdict{}, fmt.Errorf("set verdict of %s: %w", v.ID, ErrClosed)
	}
	v.Origin = c.cfg.Name
	if err := v.validate(); err != nil {
		return Verdict{}, err
	}
	c.mu.Lock()
	if r, ok := c.catalog.Get(v.ID); !ok || r.State == StateRemoved {
		c.mu.Unlock()
		return Verdict{}, fmt.Errorf("set verdict of %s: %w", v.ID, ErrUnknownBackend)
	}
	if cur, ok := c.health.verdicts[v.ID]; ok && cur.Same(v) {
		c.mu.Unlock()
		return cur, nil
	}
	if !c.health.verdictFits(v) {
		c.mu.Unlock()
		return Verdict{}, fmt.Errorf("set verdict of %s: verdicts hold %d bytes, the limit", v.ID, maxVerdictBytes)
	}
	c.clock = max(c.clock+1, uint64(time.Now().UnixMilli())<<16)
	v.Version = c.clock
	c.health.mergeVerdict(v)
	c.broadcastLocked("v\x00"+v.ID, encodeVerdictMsg(v))
	c.noteCatalogLocked()
	c.mu.Unlock()
	c.signal()
	return v, nil
}

// Observations returns every observation held, of live and gone nodes
// alike, sorted by backend and node.
func (c *Cluster) Observations() []Observation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.health.observations()
}

// Verdicts returns the health verdicts held, by backend.
func (c *Cluster) Verdicts() map[string]Verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]Verdict, len(c.health.verdicts))
	for id, v := range c.health.verdicts {
		out[id] = v
	}
	return out
}

// tombstonedLocked reports whether the catalog holds id as removed.
func (c *Cluster) tombstonedLocked(id string) bool {
	r, ok := c.catalog.Get(id)
	return ok && r.State == StateRemoved
}

// mergeObsLocked merges an observation from a peer. One of ours, from
// before a restart, that is newer than what we now see is refuted with a
// newer version of our current view, as memberlist refutes a suspicion.
// With relay, what is new here is passed on (memberlist does not relay).
func (c *Cluster) mergeObsLocked(o Observation, now time.Time, relay bool) (bool, error) {
	if o.Since().After(now.Add(maxClockSkew)) {
		return false, reject(reasonFuture, "observation of %s by %s is stamped %v, more than %v ahead", o.ID, o.Node, o.Since().UTC(), maxClockSkew)
	}
	if c.tombstonedLocked(o.ID) {
		return false, nil
	}
	if !c.health.obsFits(o) {
		return false, reject(reasonFull, "observations hold %d bytes: observation of %s by %s refused", maxObsBytes, o.ID, o.Node)
	}
	c.clock = max(c.clock, o.Version)
	if !c.health.mergeObs(o) {
		return false, nil
	}
	if o.Node == c.cfg.Name {
		if mine, ok := c.mine[o.ID]; ok && (mine.Up != o.Up || mine.Detail != o.Detail) {
			c.writeObsLocked(mine)
			return true, nil
		}
	}
	if relay {
		c.broadcastLocked(obsName(o.Node, o.ID), encodeObsMsg(o))
	}
	return true, nil
}

func (c *Cluster) mergeVerdictLocked(v Verdict, now time.Time, relay bool) (bool, error) {
	if time.UnixMilli(int64(v.Version >> 16)).After(now.Add(maxClockSkew)) {
		return false, reject(reasonFuture, "verdict of %s is stamped more than %v ahead", v.ID, maxClockSkew)
	}
	if c.tombstonedLocked(v.ID) {
		return false, nil
	}
	if !c.health.verdictFits(v) {
		return false, reject(reasonFull, "verdicts hold %d bytes: verdict of %s refused", maxVerdictBytes, v.ID)
	}
	c.clock = max(c.clock, v.Version)
	if !c.health.mergeVerdict(v) {
		return false, nil
	}
	if relay {
		c.broadcastLocked("v\x00"+v.ID, encodeVerdictMsg(v))
	}
	return true, nil
}

func (c *Cluster) notifyObs(b []byte) {
	o, err := decodeObsMsg(b)
	if err != nil {
		c.rejected("observation", err)
		return
	}
	c.m.received.WithLabelValues("observation").Inc()
	c.mu.Lock()
	changed, err := c.mergeObsLocked(o, time.Now(), true)
	if changed {
		c.noteCatalogLocked()
	}
	c.mu.Unlock()
	if err != nil {
		c.rejected("observation", err)
	}
	if changed {
		c.signal()
	}
}

func (c *Cluster) notifyVerdict(b []byte) {
	v, err := decodeVerdictMsg(b)
	if err != nil {
		c.rejected("verdict", err)
		return
	}
	c.m.received.WithLabelValues("verdict").Inc()
	c.mu.Lock()
	changed, err := c.mergeVerdictLocked(v, time.Now(), true)
	if changed {
		c.noteCatalogLocked()
	}
	c.mu.Unlock()
	if err != nil {
		c.rejected("verdict", err)
	}
	if changed {
		c.signal()
	}
}

// mergeHealthStateLocked merges the health part of a full state. What it
// learns is not re-broadcast beyond maxRelayFromState items: digests and
// push/pull carry the rest.
func (c *Cluster) mergeHealthStateLocked(obs []Observation, verdicts []Verdict) bool {
	now := time.Now()
	relayed := 0
	changed := false
	var errs []error
	for _, o := range obs {
		ok, err := c.mergeObsLocked(o, now, relayed < maxRelayFromState)
		if ok {
			changed = true
			relayed++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, v := range verdicts {
		// Verdicts change rings: every new one is passed on.
		ok, err := c.mergeVerdictLocked(v, now, true)
		changed = changed || ok
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, err := range errs[:min(len(errs), 3)] {
		c.m.rejected.WithLabelValues(rejectReason(err)).Inc()
		c.log.Debug().Err(err).Msg("health state entry refused")
	}
	return changed
}

// forgetObservationsLocked drops the observations of nodes that are no
// longer live members once they are older than obsTTL.
func (c *Cluster) forgetObservationsLocked(now time.Time) int {
	n := 0
	for k, o := range c.health.obs {
		if _, live := c.peers[k.node]; live || k.node == c.cfg.Name {
			continue
		}
		if now.Sub(o.Since()) > obsTTL {
			c.health.dropObs(k)
			n++
		}
	}
	return n
}
