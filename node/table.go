package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
	"github.com/meshlb/meshlb/ring"
)

// Table is an immutable routing snapshot: one ring a pool, and the address
// of each backend on it. Readers load it through one atomic pointer and
// never lock. Its embedded PoolTable is the default pool's, so that Ring,
// Locate and Addr mean the default pool, the only one of a mesh without
// pools.
type Table struct {
	*PoolTable
	// Fingerprint covers every pool's ring and addresses: two nodes with
	// equal fingerprints send every key of every pool to the same address.
	// With the default pool alone it is that pool's fingerprint, as it was
	// before pools existed, so such meshes keep their fingerprint.
	Fingerprint uint64
	Built       time.Time

	pools map[string]*PoolTable // every pool with backends, and the default
	names []string              // sorted
}

// PoolTable is one pool's ring and the address of each backend on it.
type PoolTable struct {
	Name string
	Ring *ring.Ring
	// Fingerprint covers the pool's ring (config, members, partition
	// table) and the backends' addresses.
	Fingerprint uint64

	addrs []string // parallel to Ring.Members()
	index map[string]int
	since map[string]time.Time // each member's record time, for slow start
}

// Pool returns the table of pool, or nil when it has no backends.
func (t *Table) Pool(name string) *PoolTable {
	if name == "" {
		name = gossip.DefaultPool
	}
	p := t.pools[name]
	if p == nil || p.Ring.Len() == 0 {
		return nil
	}
	return p
}

// Pools lists the pools with backends, and the default pool, sorted.
func (t *Table) Pools() []*PoolTable {
	out := make([]*PoolTable, len(t.names))
	for i, name := range t.names {
		out[i] = t.pools[name]
	}
	return out
}

// Backends is the number of backends on all the pools' rings.
func (t *Table) Backends() int {
	n := 0
	for _, p := range t.pools {
		n += p.Ring.Len()
	}
	return n
}

// Route is where one key goes.
type Route struct {
	Backend   string
	Addr      string
	Partition int
}

// Locate returns the route for key. It does not allocate.
func (t *PoolTable) Locate(key []byte) (Route, error) {
	id, part, err := t.Ring.Locate(key)
	if err != nil {
		return Route{}, err
	}
	return Route{Backend: id, Addr: t.addrs[t.index[id]], Partition: part}, nil
}

// Addr returns the address of a backend on the ring.
func (t *PoolTable) Addr(id string) (string, bool) {
	i, ok := t.index[id]
	if !ok {
		return "", false
	}
	return t.addrs[i], true
}

// newTable builds a table from the catalog and the health verdicts: only
// active backends that no verdict takes out are on a ring, their pool's;
// draining and removed ones take no new sessions. skipped lists the records
// the ring refuses (an ID a peer accepted but the ring can't hash
// unambiguously): they stay out rather than freeze every node's ring. A
// pool whose backends are those of prev's same pool keeps prev's ring: a
// change to one pool rebuilds that pool alone.
func newTable(cfg ring.Config, records []gossip.Record, verdicts map[string]health.Verdict, prev *Table) (t *Table, skipped []string, err error) {
	byPool := map[string][]gossip.Record{gossip.DefaultPool: nil}
	for _, rec := range records {
		byPool[poolOf(rec)] = append(byPool[poolOf(rec)], rec)
	}
	t = &Table{Built: time.Now(), pools: make(map[string]*PoolTable, len(byPool))}
	for name, recs := range byPool {
		var pt *PoolTable
		if prev != nil {
			if old := prev.pools[name]; old != nil && old.sameInputs(recs, verdicts) {
				pt = old
			}
		}
		if pt == nil {
			var skip []string
			pt, skip, err = newPoolTable(cfg, name, recs, verdicts)
			skipped = append(skipped, skip...)
			if err != nil {
				if name != gossip.DefaultPool {
					err = fmt.Errorf("pool %s: %w", name, err)
				}
				return nil, skipped, err
			}
		}
		if pt.Ring.Len() == 0 && name != gossip.DefaultPool {
			continue
		}
		t.pools[name] = pt
		t.names = append(t.names, name)
	}
	slices.Sort(t.names)
	slices.Sort(skipped)
	t.PoolTable = t.pools[gossip.DefaultPool]
	t.Fingerprint = t.PoolTable.Fingerprint
	if len(t.names) > 1 {
		d := xxhash.New()
		var b [8]byte
		for _, name := range t.names {
			binary.BigEndian.PutUint64(b[:], uint64(len(name)))
			d.Write(b[:])
			d.WriteString(name)
			binary.BigEndian.PutUint64(b[:], t.pools[name].Fingerprint)
			d.Write(b[:])
		}
		t.Fingerprint = d.Sum64()
	}
	return t, skipped, nil
}

// poolOf is a record's pool; records decoded by gossip always name one.
func poolOf(rec gossip.Record) string {
	if rec.Pool == "" {
		return gossip.DefaultPool
	}
	return rec.Pool
}

func newPoolTable(cfg ring.Config, name string, records []gossip.Record, verdicts map[string]health.Verdict) (t *PoolTable, skipped []string, err error) {
	ids, addrs, skipped := effective(records, verdicts)
	r, err := ring.BuildWeighted(cfg, ids, weightsOf(records))
	if err != nil {
		return nil, skipped, err
	}
	members := r.Members()
	t = &PoolTable{Name: name, Ring: r, addrs: make([]string, len(members)), index: make(map[string]int, len(members)), since: map[string]time.Time{}}
	for _, rec := range records {
		t.since[rec.ID] = rec.Updated()
	}
	for i, id := range members {
		t.index[id] = i
		t.addrs[i] = addrs[id]
	}
	t.Fingerprint = tableFingerprint(r.Fingerprint(), members, t.addrs)
	return t, skipped, nil
}

func effective(records []gossip.Record, verdicts map[string]health.Verdict) (ids []string, addrs map[string]string, skipped []string) {
	ids = make([]string, 0, len(records))
	addrs = make(map[string]string, len(records))
	for _, rec := range records {
		if rec.State != gossip.StateActive || verdicts[rec.ID].Down() {
			continue
		}
		if ring.ValidateID(rec.ID) != nil {
			skipped = append(skipped, rec.ID)
			continue
		}
		ids = append(ids, rec.ID)
		addrs[rec.ID] = rec.Addr
	}
	slices.Sort(ids)
	return ids, addrs, skipped
}

// sameInputs reports whether t was built from exactly these backends, so a
// gossip change that does not touch the rings (a member joined, a drain of
// an already drained backend) costs no rebuild.
func (t *Table) sameInputs(records []gossip.Record, verdicts map[string]health.Verdict) bool {
	byPool := map[string][]gossip.Record{}
	for _, rec := range records {
		byPool[poolOf(rec)] = append(byPool[poolOf(rec)], rec)
	}
	for name, recs := range byPool {
		p := t.pools[name]
		if p == nil {
			if ids, _, _ := effective(recs, verdicts); len(ids) > 0 {
				return false
			}
			continue
		}
		if !p.sameInputs(recs, verdicts) {
			return false
		}
	}
	for name, p := range t.pools {
		if _, ok := byPool[name]; !ok && p.Ring.Len() > 0 {
			return false
		}
	}
	return true
}

// sameInputs reports whether t was built from exactly these backends.
func (t *PoolTable) sameInputs(records []gossip.Record, verdicts map[string]health.Verdict) bool {
	ids, addrs, _ := effective(records, verdicts)
	if len(ids) != len(t.addrs) {
		return false
	}
	weights := weightsOf(records)
	for _, id := range ids {
		if a, ok := t.Addr(id); !ok || a != addrs[id] || t.Ring.Weight(id) != weights[id] {
			return false
		}
	}
	return true
}

// weightsOf maps each record's ID to its weight.
func weightsOf(records []gossip.Record) map[string]int {
	w := make(map[string]int, len(records))
	for _, rec := range records {
		w[rec.ID] = max(rec.Weight, 1)
	}
	return w
}

func tableFingerprint(ringFP uint64, ids, addrs []string) uint64 {
	d := xxhash.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], ringFP)
	d.Write(b[:])
	for i := range ids {
		// Length-prefixed so no two lists hash alike by concatenation.
		for _, s := range [2]string{ids[i], addrs[i]} {
			binary.BigEndian.PutUint64(b[:], uint64(len(s)))
			d.Write(b[:])
			d.WriteString(s)
		}
	}
	return d.Sum64()
}

// rebuildLoop is the one goroutine that turns gossip changes into rings.
// It coalesces bursts (a quiet period, bounded by a maximum delay, as serf's
// coalescer does) and builds off the request path: the old table serves
// until the new one is swapped in. Signals that leave the catalog as it was
// (members joining, meta updates: every node republishes its meta after each
// rebuild) neither start nor prolong a coalescing window.
func (n *Node) rebuildLoop(ctx context.Context, built uint64) {
	n.publishMetaLogged()
	changes := n.changes
	// The ring fingerprint goes out in node meta a little after a swap:
	// every node rebuilds at about the same time, and a hundred alive
	// messages sent at once would crowd the catalog delta, which rides in
	// the same gossip packets after memberlist's own messages, out of the
	// nodes that have yet to receive it.
	announce := time.NewTimer(time.Hour)
	announce.Stop()
	defer announce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-announce.C:
			n.publishMetaLogged()
			continue
		case <-changes:
		}
		n.checkPeers()
		if n.inputsDigest() == built {
			continue
		}
		first := time.Now()
		if !(coalescer{quiet: n.cfg.CoalesceQuiet, max: n.cfg.CoalesceMax, digest: n.inputsDigest}).wait(ctx, changes) {
			return
		}
		built = n.rebuild(first)
		announce.Reset(n.cfg.AnnounceDelay)
	}
}

// coalescer waits out a burst of changes, as serf's coalescer does: it
// returns once digest has been steady for quiet, or max after it started
// waiting, whichever is first. A signal that leaves digest as it was
// (members joining, meta updates) does not prolong the wait.
type coalescer struct {
	quiet, max time.Duration
	digest     func() uint64
}

// wait returns false when ctx ends first.
func (c coalescer) wait(ctx context.Context, changes <-chan struct{}) bool {
	quiet := time.NewTimer(c.quiet)
	defer quiet.Stop()
	limit := time.NewTimer(c.max)
	defer limit.Stop()
	last := c.digest()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-changes:
			if d := c.digest(); d != last {
				last = d
				quiet.Reset(c.quiet)
			}
		case <-quiet.C:
			return true
		case <-limit.C:
			return true
		}
	}
}

// inputsDigest covers what the ring is built from: the catalog and the
// health verdicts (not observations, which change no ring by themselves).
func (n *Node) inputsDigest() uint64 {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], n.cluster.CatalogDigest())
	binary.BigEndian.PutUint64(b[8:], n.cluster.Digest(kindVerdict))
	return xxhash.Sum64(b[:])
}

// rebuild builds and swaps in a table for the current catalog if its
// backends changed. It returns the inputs digest it read, taken before the
// records so that a change landing in between is seen again.
func (n *Node) rebuild(since time.Time) uint64 {
	digest := n.inputsDigest()
	records := n.cluster.Records()
	verdicts := replicaVerdicts(n.cluster)
	cur := n.table.Load()
	if cur != nil && cur.sameInputs(records, verdicts) {
		return digest
	}
	start := time.Now()
	t, skipped, err := newTable(n.cfg.Ring, records, verdicts, cur)
	took := time.Since(start)
	if len(skipped) > 0 {
		n.log.Error().Strs("backends", skipped).Msg("backend ids the ring refuses are left out; remove them")
	}
	if err != nil {
		n.metrics.rebuilds.WithLabelValues("error").Inc()
		n.setBuildErr(err)
		n.log.Error().Err(err).Msg("ring rebuild failed; keeping the previous ring")
		return digest
	}
	n.table.Store(t)
	if n.swapHookForTest != nil {
		n.swapHookForTest(t)
	}
	n.setBuildErr(nil)
	n.metrics.rebuilds.WithLabelValues("ok").Inc()
	n.metrics.rebuildSeconds.Observe(took.Seconds())
	n.metrics.changeToRing.Observe(time.Since(since).Seconds())
	n.log.Info().
		Int("backends", t.Backends()).
		Int("pools", len(t.names)).
		Str("fingerprint", fp(t.Fingerprint)).
		Dur("build", took).
		Msg("ring rebuilt")
	return digest
}

func (n *Node) setBuildErr(err error) {
	n.mu.Lock()
	n.buildErr = err
	n.mu.Unlock()
}

func (n *Node) lastBuildErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.buildErr
}

// String is for logs and tests.
func (r Route) String() string { return fmt.Sprintf("%s(%s)#%d", r.Backend, r.Addr, r.Partition) }

// checkPeers logs, once per peer and fingerprint, a live peer whose config
// fingerprint differs from ours: it routes some keys elsewhere, and an
// operator must align the ring and key settings.
func (n *Node) checkPeers() {
	n.updateDrift()
	var peers []string
	for _, m := range n.cluster.Members() {
		if m.Name != n.cfg.Name {
			peers = append(peers, m.Addr, m.Meta.ProxyAddr, m.Meta.AdminAddr)
		}
	}
	n.guard.setPeers(peers...)
	for _, m := range n.cluster.Members() {
		if !live(m) || m.Meta.ConfigFP == n.configFP.Load() {
			continue
		}
		k := m.Name + "/" + fp(m.Meta.ConfigFP)
		if _, seen := n.mismatches.LoadOrStore(k, true); !seen {
			n.log.Error().Str("peer", m.Name).Str("peer_config_fingerprint", fp(m.Meta.ConfigFP)).
				Str("config_fingerprint", fp(n.configFP.Load())).Msg("peer has another ring or key configuration; the mesh routes keys differently")
		}
	}
}
