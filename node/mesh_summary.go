package node

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/ring"
)

// The load summary: each node gossips a small record of its own load
// (kind 5, owned: its key is the node's name and only it writes it), so
// that any node can show the whole mesh — GET /v1/mesh, the dashboard —
// without reaching the other nodes' admin ports.
const kindLoad gossip.Kind = 5

const (
	// maxLoadValue bounds one summary so that it rides one gossip packet
	// with room to spare.
	maxLoadValue = 512
	// summaryInterval is how often a node looks at its load; it writes
	// only when the summary changed, so an idle mesh gossips none.
	summaryInterval = 2 * time.Second
	// loadTTL: the summary of a node that left is forgotten after this
	// (the view shows live members only, at once).
	loadTTL = 10 * time.Minute
	// loadVersion is the encoding's first byte.
	loadVersion = 1
)

// loadSpec is the kind's spec, for replicatedKinds. 256 KiB holds the
// summaries of some 500 nodes at their largest, more at a typical 50-100
// bytes each.
func loadSpec() gossip.KindSpec {
	return gossip.KindSpec{
		Kind: kindLoad, Name: "load",
		MaxValue: maxLoadValue, MaxEntries: 4096, MaxBytes: 256 << 10,
		Validate: func(key string, value []byte) error {
			_, err := decodeLoad(value)
			return err
		},
		Owned: true, OwnerTTL: loadTTL,
	}
}

// loadSummary is one node's load. Rates are per second over the last
// summaryInterval, kept to 1/100.
type loadSummary struct {
	HandshakesPerSec float64
	RequestsPerSec   float64
	ErrorsPerSec     float64
	Sessions         int64            // open WebSockets, in all
	Backends         map[string]int64 // open WebSockets by backend, the largest that fit
	Other            int64            // sessions of backends left out for room
}

// encodeLoad encodes s in at most maxLoadValue bytes: version, the three
// rates in hundredths, the total, then (ID, sessions) pairs by sessions
// descending for as many backends as fit, and the sessions of the rest.
// A node routing to more backends than fit (IDs may be 255 bytes) thus
// shows its busiest ones and an "other" count; the total stays exact.
func encodeLoad(s loadSummary) []byte {
	type kv struct {
		id string
		n  int64
	}
	list := make([]kv, 0, len(s.Backends))
	for id, n := range s.Backends {
		if n > 0 {
			list = append(list, kv{id, n})
		}
	}
	slices.SortFunc(list, func(a, b kv) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.id, b.id)) })
	b := []byte{loadVersion}
	for _, r := range []float64{s.HandshakesPerSec, s.RequestsPerSec, s.ErrorsPerSec} {
		b = binary.AppendUvarint(b, uint64(math.Round(max(r, 0)*100)))
	}
	b = binary.AppendUvarint(b, uint64(max(s.Sessions, 0)))
	// Room for the count of pairs and the other count: 2 × 10 bytes.
	room := maxLoadValue - len(b) - 2*binary.MaxVarintLen64
	var pairs []byte
	var listed int
	other := max(s.Other, 0)
	for _, e := range list {
		var p []byte
		p = binary.AppendUvarint(p, uint64(len(e.id)))
		p = append(p, e.id...)
		p = binary.AppendUvarint(p, uint64(e.n))
		if len(pairs)+len(p) > room {
			other += e.n
			continue
		}
		pairs = append(pairs, p...)
		listed++
	}
	b = binary.AppendUvarint(b, uint64(listed))
	b = append(b, pairs...)
	return binary.AppendUvarint(b, uint64(other))
}

var errBadLoad = errors.New("malformed load summary")

// decodeLoad decodes a summary from a peer; it never panics on garbage.
func decodeLoad(b []byte) (loadSummary, error) {
	var s loadSummary
	if len(b) == 0 || b[0] != loadVersion || len(b) > maxLoadValue {
		return s, errBadLoad
	}
	r := bytes.NewReader(b[1:])
	next := func() (uint64, error) {
		v, err := binary.ReadUvarint(r)
		if err != nil || v > math.MaxInt64 {
			return 0, errBadLoad
		}
		return v, nil
	}
	var rates [3]float64
	for i := range rates {
		v, err := next()
		if err != nil {
			return s, err
		}
		rates[i] = float64(v) / 100
	}
	s.HandshakesPerSec, s.RequestsPerSec, s.ErrorsPerSec = rates[0], rates[1], rates[2]
	total, err := next()
	if err != nil {
		return s, err
	}
	s.Sessions = int64(total)
	n, err := next()
	if err != nil || n > maxLoadValue {
		return s, errBadLoad
	}
	s.Backends = make(map[string]int64, n)
	for range n {
		l, err := next()
		if err != nil || l > uint64(r.Len()) {
			return s, errBadLoad
		}
		id := make([]byte, l)
		_, _ = r.Read(id)
		if ring.ValidateID(string(id)) != nil {
			return s, errBadLoad
		}
		v, err := next()
		if err != nil {
			return s, err
		}
		if _, dup := s.Backends[string(id)]; dup {
			return s, errBadLoad
		}
		s.Backends[string(id)] = int64(v)
	}
	other, err := next()
	if err != nil || r.Len() != 0 {
		return s, errBadLoad
	}
	s.Other = int64(other)
	return s, nil
}

// summaryLoop publishes this node's summary every summaryInterval when
// it changed, and records the rates for the dashboard.
func (n *Node) summaryLoop(ctx context.Context) {
	t := time.NewTicker(summaryInterval)
	defer t.Stop()
	o := n.obs
	last := time.Now()
	lastHS, lastReq, lastErr := o.handshakeCount.Load(), o.requestCount.Load(), o.errorCount.Load()
	var published []byte
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			secs := now.Sub(last).Seconds()
			hs, req, er := o.handshakeCount.Load(), o.requestCount.Load(), o.errorCount.Load()
			s := loadSummary{Backends: map[string]int64{},
				HandshakesPerSec: float64(hs-lastHS) / secs, RequestsPerSec: float64(req-lastReq) / secs, ErrorsPerSec: float64(er-lastErr) / secs}
			last, lastHS, lastReq, lastErr = now, hs, req, er
			for _, bt := range n.router.Traffic(false) {
				s.Sessions += bt.Sessions
				s.Backends[bt.Backend] = bt.Sessions
			}
			if v := encodeLoad(s); !bytes.Equal(v, published) {
				if _, err := n.cluster.Put(kindLoad, n.cfg.Name, v); err != nil {
					if !errors.Is(err, gossip.ErrClosed) {
						n.log.Warn().Err(err).Msg("publish load summary failed")
					}
				} else {
					published = v
				}
			}
			mv := n.MeshView()
			o.rates.add(rateSample{Time: now.UnixMilli(), Sessions: mv.Sessions,
				HandshakesPerSec: mv.HandshakesPerSec, RequestsPerSec: mv.RequestsPerSec, ErrorsPerSec: mv.ErrorsPerSec})
		}
	}
}

// MeshNode is one live node's load, from its gossiped summary.
type MeshNode struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// HasSummary is false until the node's first summary arrived.
	HasSummary       bool             `json:"has_summary"`
	Updated          time.Time        `json:"updated"`
	Sessions         int64            `json:"sessions"`
	Backends         map[string]int64 `json:"backends"`
	OtherSessions    int64            `json:"other_sessions"`
	HandshakesPerSec float64          `json:"handshakes_per_s"`
	RequestsPerSec   float64          `json:"requests_per_s"`
	ErrorsPerSec     float64          `json:"errors_per_s"`
}

// MeshView is the answer of GET /v1/mesh: the load of every live node,
// and its sums.
type MeshView struct {
	Node             string           `json:"node"`
	Nodes            []MeshNode       `json:"nodes"`
	Backends         map[string]int64 `json:"backends"` // open sessions by backend, mesh-wide
	Sessions         int64            `json:"sessions"`
	HandshakesPerSec float64          `json:"handshakes_per_s"`
	RequestsPerSec   float64          `json:"requests_per_s"`
	ErrorsPerSec     float64          `json:"errors_per_s"`
}

// MeshView gathers the live members' summaries from the replica.
func (n *Node) MeshView() MeshView {
	v := MeshView{Node: n.cfg.Name, Nodes: []MeshNode{}, Backends: map[string]int64{}}
	for _, m := range n.cluster.Members() {
		if !live(m) {
			continue
		}
		mn := MeshNode{Name: m.Name, State: m.Meta.State.String(), Backends: map[string]int64{}}
		if e, ok := n.cluster.Get(kindLoad, m.Name); ok && !e.Deleted {
			if s, err := decodeLoad(e.Value); err == nil { // checked when merged
				mn.HasSummary, mn.Updated = true, e.Time().UTC()
				mn.Sessions, mn.Backends, mn.OtherSessions = s.Sessions, s.Backends, s.Other
				mn.HandshakesPerSec, mn.RequestsPerSec, mn.ErrorsPerSec = s.HandshakesPerSec, s.RequestsPerSec, s.ErrorsPerSec
			}
		}
		for id, k := range mn.Backends {
			v.Backends[id] += k
		}
		v.Sessions += mn.Sessions
		v.HandshakesPerSec += mn.HandshakesPerSec
		v.RequestsPerSec += mn.RequestsPerSec
		v.ErrorsPerSec += mn.ErrorsPerSec
		v.Nodes = append(v.Nodes, mn)
	}
	slices.SortFunc(v.Nodes, func(a, b MeshNode) int { return cmp.Compare(a.Name, b.Name) })
	return v
}

func (n *Node) handleMesh(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, n.MeshView())
}

// rateSample is one point of the dashboard's rate graphs: mesh-wide sums.
type rateSample struct {
	Time             int64   `json:"t"` // unix ms
	Sessions         int64   `json:"sessions"`
	HandshakesPerSec float64 `json:"handshakes_per_s"`
	RequestsPerSec   float64 `json:"requests_per_s"`
	ErrorsPerSec     float64 `json:"errors_per_s"`
}

// rateSamples: 6 minutes at summaryInterval.
const rateSamples = 180

// rateHistory is a bounded ring of rate samples; safe for concurrent use.
type rateHistory struct {
	mu   sync.Mutex
	buf  []rateSample
	next int
	full bool
}

func newRateHistory(n int) *rateHistory {
	return &rateHistory{buf: make([]rateSample, n)}
}

func (h *rateHistory) add(s rateSample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf[h.next] = s
	h.next = (h.next + 1) % len(h.buf)
	if h.next == 0 {
		h.full = true
	}
}

// samples returns the samples, oldest first.
func (h *rateHistory) samples() []rateSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return slices.Clone(h.buf[:h.next])
	}
	return append(slices.Clone(h.buf[h.next:]), h.buf[:h.next]...)
}
