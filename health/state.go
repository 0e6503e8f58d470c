package health

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Health is replicated as two kinds of entry in the mesh's replica (the
// node registers them with gossip; see node/kinds.go):
//
//   - an Observation is one node's own view of one backend (up or down, and
//     why). Each node writes only its own.
//   - a Verdict is the mesh's decision about one backend: in the ring or out
//     of it for health, with the flap-damping state that led there. The
//     decider writes them; every node holds the same verdicts and builds the
//     same ring, whichever node decided.
//
// Neither is ever deleted by health: an observation or verdict of a backend
// the catalog removed goes with it, and one of a node that is gone is
// ignored by the vote at once and forgotten after an hour.
//
// Their values are encoded here, so that gossip carries them as opaque
// bytes; decoding is strict (one encoding per value) and fuzzed.

// MaxDetailLen bounds an observation's detail.
const MaxDetailLen = 96

// Observation is one node's view of one backend.
type Observation struct {
	Node   string // the observer
	ID     string // the backend
	Up     bool
	Detail string    // why, e.g. "tcp: connection refused"; may be empty
	Since  time.Time // when the observer published it
}

// ObservationKey is the replica key of node's observation of backend id:
// the two joined by a NUL, which neither may contain.
func ObservationKey(id, node string) string { return id + "\x00" + node }

// SplitObservationKey undoes ObservationKey.
func SplitObservationKey(key string) (id, node string, ok bool) {
	id, node, ok = strings.Cut(key, "\x00")
	return id, node, ok && id != "" && node != "" && !strings.Contains(node, "\x00")
}

// Value is the observation's replicated form: up(1 byte, 0 or 1) followed
// by the detail, cut to MaxDetailLen bytes on a rune boundary.
func (o Observation) Value() []byte {
	d := o.Detail
	if len(d) > MaxDetailLen {
		n := MaxDetailLen
		for n > 0 && !utf8.RuneStart(d[n]) {
			n--
		}
		d = d[:n]
	}
	up := byte(0)
	if o.Up {
		up = 1
	}
	return append([]byte{up}, d...)
}

// DecodeObservation reads what Observation.Value wrote; the key gives the
// node and backend, the replica the time.
func DecodeObservation(key string, value []byte, since time.Time) (Observation, error) {
	id, node, ok := SplitObservationKey(key)
	if !ok {
		return Observation{}, fmt.Errorf("observation key %q: want backend NUL node", key)
	}
	if len(value) < 1 || value[0] > 1 {
		return Observation{}, fmt.Errorf("observation of %s by %s: want an up byte of 0 or 1", id, node)
	}
	if len(value)-1 > MaxDetailLen {
		return Observation{}, fmt.Errorf("observation of %s by %s: detail longer than %d bytes", id, node, MaxDetailLen)
	}
	return Observation{Node: node, ID: id, Up: value[0] == 1, Detail: string(value[1:]), Since: since}, nil
}

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
	// down when the decision was made; a later count that changes nothing
	// is not written (see Same).
	Votes, Voters uint16
	// Strikes counts recent ejections; flap damping holds a backend out for
	// longer with each one.
	Strikes uint16
	// Changed is when the backend last went in or out of the ring (unix ms).
	Changed uint64
	// UpSince is when a quorum began to see a held backend up again (unix
	// ms); zero while it is seen down.
	UpSince uint64
	// Origin is the node that wrote it, filled in from the replica.
	Origin string
}

// Down reports whether the verdict takes the backend out of the ring.
func (v Verdict) Down() bool { return v.Reason == VerdictDown || v.Reason == VerdictHeld }

// Same reports whether v and w decide alike, ignoring who wrote them and
// the vote count they recorded: a member joining or leaving changes every
// count, and rewriting every verdict for it would flood the mesh.
func (v Verdict) Same(w Verdict) bool {
	v.Origin, w.Origin = "", ""
	v.Votes, v.Voters, w.Votes, w.Voters = 0, 0, 0, 0
	return v == w
}

// Value is the verdict's replicated form (the key is its backend ID):
// reason(1 byte) then uvarints votes, voters, strikes, changed, up_since.
func (v Verdict) Value() []byte {
	b := make([]byte, 0, 1+5*binary.MaxVarintLen64)
	b = append(b, byte(v.Reason))
	for _, x := range [...]uint64{uint64(v.Votes), uint64(v.Voters), uint64(v.Strikes), v.Changed, v.UpSince} {
		b = binary.AppendUvarint(b, x)
	}
	return b
}

// DecodeVerdict reads what Verdict.Value wrote for backend id, strictly:
// minimal uvarints, counts that fit 16 bits, no more votes than voters, no
// trailing byte.
func DecodeVerdict(id string, value []byte) (Verdict, error) {
	if len(value) < 1 {
		return Verdict{}, fmt.Errorf("verdict of %s: empty", id)
	}
	v := Verdict{ID: id, Reason: VerdictReason(value[0])}
	if !v.Reason.valid() {
		return Verdict{}, fmt.Errorf("verdict of %s: unknown reason %d", id, value[0])
	}
	b := value[1:]
	var xs [5]uint64
	for i := range xs {
		x, n := binary.Uvarint(b)
		if n <= 0 || (n > 1 && b[n-1] == 0) {
			return Verdict{}, fmt.Errorf("verdict of %s: field %d: %w", id, i, errMalformedUvarint)
		}
		xs[i], b = x, b[n:]
	}
	if len(b) > 0 {
		return Verdict{}, fmt.Errorf("verdict of %s: %d trailing bytes", id, len(b))
	}
	for i, x := range xs[:3] {
		if x > 0xffff {
			return Verdict{}, fmt.Errorf("verdict of %s: count %d of %d out of range", id, i, x)
		}
	}
	v.Votes, v.Voters, v.Strikes, v.Changed, v.UpSince = uint16(xs[0]), uint16(xs[1]), uint16(xs[2]), xs[3], xs[4]
	if v.Votes > v.Voters {
		return Verdict{}, fmt.Errorf("verdict of %s: %d votes of %d voters", id, v.Votes, v.Voters)
	}
	return v, nil
}

var errMalformedUvarint = errors.New("truncated or non-minimal uvarint")
