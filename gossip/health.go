package gossip

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Health is replicated as two kinds of record besides the catalog:
//
//   - an Observation is one node's own view of one backend (up or down, and
//     why). Each node writes only its own, so they merge by version alone.
//   - a Verdict is the mesh's decision about one backend: in the ring or out
//     of it for health, with the flap-damping state that led there. The
//     decider (one node, see the health package) writes them; they merge by
//     last-writer-wins like catalog records, so every node holds the same
//     verdicts and builds the same ring, whichever node decided.
//
// Neither is ever a tombstone: an observation or verdict of a backend that
// the catalog removed is dropped with it, and one of a node that is gone is
// ignored by the vote and dropped after obsTTL.

const (
	maxDetailLen = 96
	// maxObsBytes and maxVerdictBytes bound the encoded size of the
	// observations (nodes × backends) and verdicts held, so that a full
	// state at every limit still fits memberlist's 20 MB push/pull cap
	// (TestFullStateFitsPushPull). With 20-byte names that is some 80,000
	// observations and 30,000 verdicts.
	maxObsBytes     = 3 << 20
	maxVerdictBytes = 1 << 20
	// maxObservations bounds the count a full state may claim.
	maxObservations = maxObsBytes / minObsLen
	// obsTTL is how long the observations of a node that is no longer a
	// live member are kept before they are forgotten.
	obsTTL = time.Hour
)

// Observation is one node's view of one backend.
type Observation struct {
	Node    string // the observer
	ID      string // the backend
	Up      bool
	Version uint64 // the observer's hybrid logical clock at the observation
	Detail  string // why, e.g. "tcp connect: connection refused"; may be empty
}

// Since is when the observer made this observation.
func (o Observation) Since() time.Time { return time.UnixMilli(int64(o.Version >> 16)) }

// Less orders two observations of one (node, backend) for merging: the
// greater version wins, and the content breaks ties so the order is total.
func (o Observation) Less(p Observation) bool {
	if c := cmp.Compare(o.Version, p.Version); c != 0 {
		return c < 0
	}
	if o.Up != p.Up {
		return !o.Up
	}
	return o.Detail < p.Detail
}

func (o Observation) validate() error {
	if err := validateName(o.Node); err != nil {
		return fmt.Errorf("observation: %w", err)
	}
	if err := validateID(o.ID); err != nil {
		return fmt.Errorf("observation: %w", err)
	}
	if len(o.Detail) > maxDetailLen {
		return fmt.Errorf("observation of %q: detail longer than %d bytes", o.ID, maxDetailLen)
	}
	return nil
}

type obsKey struct{ node, id string }

// VerdictReason is why a verdict keeps a backend in the ring or out of it.
type VerdictReason uint8

// Verdict reasons. The zero value is invalid.
const (
	VerdictUp         VerdictReason = iota + 1 // no quorum sees it down: in the ring
	VerdictDown                                // a quorum sees it down: out
	VerdictHeld                                // flapping: held out until stable
	VerdictOverBudget                          // a quorum sees it down, but the ejection budget is spent: kept in
)

func (r VerdictReason) String() string {
	switch r {
	case VerdictUp:
		return "up"
	case VerdictDown:
		return "down"
	case VerdictHeld:
		return "held"
	case VerdictOverBudget:
		return "over_budget"
	}
	return fmt.Sprintf("verdict(%d)", uint8(r))
}

func (r VerdictReason) valid() bool { return r >= VerdictUp && r <= VerdictOverBudget }

// Verdict is the mesh's health decision for one backend.
type Verdict struct {
	ID     string
	Reason VerdictReason
	// Votes of the Voters (live nodes with an observation) saw the backend
	// down when the verdict was written.
	Votes, Voters uint16
	// Strikes counts recent ejections; flap damping holds a backend out for
	// longer with each one.
	Strikes uint16
	// Changed is when the backend last went in or out of the ring (unix ms).
	Changed uint64
	// UpSince is when a quorum began to see a held backend up again (unix
	// ms); zero while it is seen down.
	UpSince uint64
	Version uint64 // hybrid logical clock of the writer
	Origin  string // the node that wrote it
}

// Down reports whether the verdict takes the backend out of the ring.
func (v Verdict) Down() bool { return v.Reason == VerdictDown || v.Reason == VerdictHeld }

// Same reports whether v and w decide alike, ignoring who wrote them when.
func (v Verdict) Same(w Verdict) bool {
	v.Version, v.Origin, w.Version, w.Origin = 0, "", 0, ""
	return v == w
}

// Less is the merge order of verdicts: (Version, Origin), then the content,
// so that keeping the maximum is commutative, associative and idempotent.
func (v Verdict) Less(w Verdict) bool {
	if c := cmp.Compare(v.Version, w.Version); c != 0 {
		return c < 0
	}
	if c := cmp.Compare(v.Origin, w.Origin); c != 0 {
		return c < 0
	}
	return slices.Compare(appendVerdict(nil, v), appendVerdict(nil, w)) < 0
}

func (v Verdict) validate() error {
	if err := validateID(v.ID); err != nil {
		return fmt.Errorf("verdict: %w", err)
	}
	if !v.Reason.valid() {
		return fmt.Errorf("verdict of %q: unknown reason %d", v.ID, uint8(v.Reason))
	}
	if v.Votes > v.Voters {
		return fmt.Errorf("verdict of %q: %d votes of %d voters", v.ID, v.Votes, v.Voters)
	}
	if err := validateName(v.Origin); err != nil {
		return fmt.Errorf("verdict of %q origin: %w", v.ID, err)
	}
	return nil
}

// healthState holds observations and verdicts. Like Catalog it has no lock.
type healthState struct {
	obs       map[obsKey]Observation
	verdicts  map[string]Verdict
	obsDigest uint64 // sum of observation hashes
	verDigest uint64 // sum of verdict hashes
	obsBytes  int    // encoded size of obs
	verBytes  int    // encoded size of verdicts
}

// obsFits reports whether o can be held without passing maxObsBytes.
func (h *healthState) obsFits(o Observation) bool {
	cur, ok := h.obs[obsKey{o.Node, o.ID}]
	n := h.obsBytes + obsSize(o)
	if ok {
		n -= obsSize(cur)
	}
	return n <= maxObsBytes
}

func (h *healthState) verdictFits(v Verdict) bool {
	cur, ok := h.verdicts[v.ID]
	n := h.verBytes + verdictSize(v)
	if ok {
		n -= verdictSize(cur)
	}
	return n <= maxVerdictBytes
}

func obsSize(o Observation) int { return len(appendObs(nil, o)) }
func verdictSize(v Verdict) int { return len(appendVerdict(nil, v)) }

func newHealthState() *healthState {
	return &healthState{obs: make(map[obsKey]Observation), verdicts: make(map[string]Verdict)}
}

// mergeObs keeps o if it is newer than what is held for its key.
func (h *healthState) mergeObs(o Observation) bool {
	k := obsKey{o.Node, o.ID}
	cur, ok := h.obs[k]
	if ok && !cur.Less(o) {
		return false
	}
	if ok {
		h.obsDigest -= obsHash(cur)
		h.obsBytes -= obsSize(cur)
	}
	h.obs[k] = o
	h.obsDigest += obsHash(o)
	h.obsBytes += obsSize(o)
	return true
}

func (h *healthState) mergeVerdict(v Verdict) bool {
	cur, ok := h.verdicts[v.ID]
	if ok && !cur.Less(v) {
		return false
	}
	if ok {
		h.verDigest -= verdictHash(cur)
		h.verBytes -= verdictSize(cur)
	}
	h.verdicts[v.ID] = v
	h.verDigest += verdictHash(v)
	h.verBytes += verdictSize(v)
	return true
}

// dropBackend forgets everything about backend id.
func (h *healthState) dropBackend(id string) bool {
	changed := false
	if v, ok := h.verdicts[id]; ok {
		h.verDigest -= verdictHash(v)
		h.verBytes -= verdictSize(v)
		delete(h.verdicts, id)
		changed = true
	}
	for k := range h.obs {
		if k.id == id {
			h.dropObs(k)
			changed = true
		}
	}
	return changed
}

// dropObs forgets one observation.
func (h *healthState) dropObs(k obsKey) {
	if o, ok := h.obs[k]; ok {
		h.obsDigest -= obsHash(o)
		h.obsBytes -= obsSize(o)
		delete(h.obs, k)
	}
}

// observations returns every observation sorted by (backend, node).
func (h *healthState) observations() []Observation {
	out := make([]Observation, 0, len(h.obs))
	for _, o := range h.obs {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Observation) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Node, b.Node))
	})
	return out
}

// verdictList returns every verdict sorted by backend.
func (h *healthState) verdictList() []Verdict {
	out := make([]Verdict, 0, len(h.verdicts))
	for _, v := range h.verdicts {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b Verdict) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func obsHash(o Observation) uint64 {
	var buf [2*(maxOriginLen+maxIDLen) + maxDetailLen + 16]byte
	return xxhash.Sum64(appendObs(buf[:0], o))
}

func verdictHash(v Verdict) uint64 {
	var buf [maxIDLen + maxOriginLen + 64]byte
	return xxhash.Sum64(appendVerdict(buf[:0], v))
}
