package node

import (
	"errors"
	"sync"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
)

// gossipMesh adapts the gossip cluster to what health's decider needs
// (health.Mesh), so health never sees gossip's types and gossip never sees
// health's.
type gossipMesh struct {
	c       *gossip.Cluster
	changes <-chan struct{}

	// The decider asks for the backends after every gossip change, and
	// most changes are health observations (nodes × backends of them
	// while a mesh forms): the list is kept until the catalog's digest
	// moves. 100 nodes in one process with 300 backends spent a tenth of
	// their CPU rebuilding it.
	mu         sync.Mutex
	backendsFP uint64
	backends   []health.Backend
}

var _ health.Mesh = (*gossipMesh)(nil)

func (m *gossipMesh) Self() string                        { return m.c.LocalName() }
func (m *gossipMesh) Synced() bool                        { return m.c.Synced() }
func (m *gossipMesh) Changes() <-chan struct{}            { return m.changes }
func (m *gossipMesh) Members() []health.Member            { return liveMembers(m.c.Members()) }
func (m *gossipMesh) Verdicts() map[string]health.Verdict { return replicaVerdicts(m.c) }

// liveMembers is the one "live member" rule: a member whose meta decodes
// and that is not leaving. A leaving member's vote no longer counts, and it
// can't decide.
func liveMembers(ms []gossip.Member) []health.Member {
	out := make([]health.Member, 0, len(ms))
	for _, m := range ms {
		if live(m) {
			out = append(out, health.Member{Name: m.Name, Draining: m.Meta.State == gossip.NodeDraining})
		}
	}
	return out
}

func live(m gossip.Member) bool { return m.MetaErr == nil && m.Meta.State != gossip.NodeLeaving }

// Backends returns the active and draining backends; the slice is shared
// by the callers until the catalog changes: read only.
func (m *gossipMesh) Backends() []health.Backend {
	fp := m.c.Digest(gossip.KindBackend) // before the records: a newer list under an older digest is only recomputed
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.backends != nil && fp == m.backendsFP {
		return m.backends
	}
	out := []health.Backend{}
	for _, r := range m.c.Records() {
		if r.State == gossip.StateActive || r.State == gossip.StateDraining {
			out = append(out, health.Backend{ID: r.ID, Addr: r.Addr, Draining: r.State == gossip.StateDraining, Pool: poolOf(r)})
		}
	}
	m.backends, m.backendsFP = out, fp
	return out
}

func (m *gossipMesh) Observations() []health.Observation { return replicaObservations(m.c) }

// replicaObservations decodes the replica's observations, sorted by backend and
// node (their key's order).
func replicaObservations(c *gossip.Cluster) []health.Observation {
	es := c.Entries(kindObservation)
	out := make([]health.Observation, 0, len(es))
	for _, e := range es {
		if o, err := health.DecodeObservation(e.Key, e.Value, e.Time()); err == nil { // checked when merged
			out = append(out, o)
		}
	}
	return out
}

// replicaVerdicts decodes the replica's verdicts, by backend.
func replicaVerdicts(c *gossip.Cluster) map[string]health.Verdict {
	es := c.Entries(kindVerdict)
	out := make(map[string]health.Verdict, len(es))
	for _, e := range es {
		if v, err := health.DecodeVerdict(e.Key, e.Value); err == nil { // checked when merged
			v.Origin = e.Origin
			out[e.Key] = v
		}
	}
	return out
}

func (m *gossipMesh) Observe(o health.Observation) error {
	_, err := m.c.Put(kindObservation, health.ObservationKey(o.ID, m.c.LocalName()), o.Value())
	return benign(err)
}

func (m *gossipMesh) SetVerdict(v health.Verdict) error {
	_, err := m.c.Update(kindVerdict, v.ID, func(cur gossip.Entry, ok bool) (gossip.Entry, bool, error) {
		if ok {
			if held, err := health.DecodeVerdict(cur.Key, cur.Value); err == nil && held.Same(v) {
				return cur, false, nil
			}
		}
		return gossip.Entry{Value: v.Value()}, true, nil
	})
	return benign(err)
}

// benign drops the errors of a write the mesh can no longer take: the node
// left, or the backend was removed meanwhile.
func benign(err error) error {
	if errors.Is(err, gossip.ErrClosed) || errors.Is(err, gossip.ErrUnknownBackend) {
		return nil
	}
	return err
}
