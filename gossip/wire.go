package gossip

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format of gossip messages, all hand-written with encoding/binary
// uvarints:
//
//	message  = version(1 byte, = 2) type(1 byte) body
//	record   = uvarint(len) id  uvarint(len) addr  state(1 byte)  uvarint(version)  uvarint(len) origin
//	obs      = uvarint(len) node  uvarint(len) id  up(1 byte, 0 or 1)  uvarint(version)  uvarint(len) detail
//	verdict  = uvarint(len) id  reason(1 byte)  uvarint(votes)  uvarint(voters)  uvarint(strikes)
//	           uvarint(changed)  uvarint(up_since)  uvarint(version)  uvarint(len) origin
//	msgRecord  (type 1, one delta)   body = record
//	msgState   (type 2, push/pull)   body = uvarint(len) sender  uvarint(count) record*count (ascending id)
//	                                        uvarint(count) obs*count (ascending id, node)
//	                                        uvarint(count) verdict*count (ascending id)
//	msgAck     (type 3, ping ack)    body = digest(8 bytes, big endian)
//	msgObs     (type 4, one delta)   body = obs
//	msgVerdict (type 5, one delta)   body = verdict
//
// Version 2 added observations and verdicts; a version 1 peer's messages
// are refused (and counted) with reason "version".
//
// Decoding is strict: every length is checked, uvarints must be minimal, an
// unknown state, type or version is rejected and no trailing byte is allowed,
// so each value has exactly one encoding.
const (
	wireVersion = 2

	msgRecord  = 1
	msgState   = 2
	msgAck     = 3
	msgObs     = 4
	msgVerdict = 5

	// maxRecordMsg is the size of a record message with every field at its
	// maximum length: it must fit memberlist's packet budget.
	maxRecordMsg = 2 + 2 + maxIDLen + 2 + maxAddrLen + 1 + binary.MaxVarintLen64 + 2 + maxOriginLen
	// minRecordLen is the smallest encoded record ("x", "h:1", state,
	// version 0, "o"), used to bound the count of a full state.
	minRecordLen = 2 + 4 + 1 + 1 + 2
	// minObsLen and minVerdictLen are the smallest encoded observation and
	// verdict.
	minObsLen     = 2 + 2 + 1 + 1 + 1
	minVerdictLen = 2 + 1 + 6 + 1 + 2
	// packetBudget is what memberlist leaves for one user broadcast with
	// encryption on (UDPBufferSize 1400, see NOTES.md).
	packetBudget = 1366
	// maxMsgSize rejects a user message larger than any we send.
	maxMsgSize = 2048
)

// Reasons a message is rejected; they label meshlb_gossip_messages_rejected_total.
const (
	reasonTruncated = "truncated"
	reasonVersion   = "version"
	reasonType      = "type"
	reasonMalformed = "malformed"
	reasonOversized = "oversized"
	reasonTrailing  = "trailing"
	reasonFuture    = "future"
	reasonFull      = "full"
)

// decodeError is a rejected message, with the reason used as a metric label.
type decodeError struct {
	reason string
	err    error
}

func (e *decodeError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

func reject(reason string, format string, args ...any) error {
	return &decodeError{reason: reason, err: fmt.Errorf(format, args...)}
}

// rejectReason returns the metric label for a decode error.
func rejectReason(err error) string {
	if de, ok := errors.AsType[*decodeError](err); ok {
		return de.reason
	}
	return reasonMalformed
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendRecord(b []byte, r Record) []byte {
	b = appendString(b, r.ID)
	b = appendString(b, r.Addr)
	b = append(b, byte(r.State))
	b = binary.AppendUvarint(b, r.Version)
	return appendString(b, r.Origin)
}

func encodeRecordMsg(r Record) []byte {
	b := make([]byte, 0, 16+len(r.ID)+len(r.Addr)+len(r.Origin))
	b = append(b, wireVersion, msgRecord)
	return appendRecord(b, r)
}

func appendObs(b []byte, o Observation) []byte {
	b = appendString(b, o.Node)
	b = appendString(b, o.ID)
	up := byte(0)
	if o.Up {
		up = 1
	}
	b = append(b, up)
	b = binary.AppendUvarint(b, o.Version)
	return appendString(b, o.Detail)
}

func appendVerdict(b []byte, v Verdict) []byte {
	b = appendString(b, v.ID)
	b = append(b, byte(v.Reason))
	for _, x := range [...]uint64{uint64(v.Votes), uint64(v.Voters), uint64(v.Strikes), v.Changed, v.UpSince, v.Version} {
		b = binary.AppendUvarint(b, x)
	}
	return appendString(b, v.Origin)
}

func encodeObsMsg(o Observation) []byte {
	b := make([]byte, 0, 16+len(o.Node)+len(o.ID)+len(o.Detail))
	b = append(b, wireVersion, msgObs)
	return appendObs(b, o)
}

func encodeVerdictMsg(v Verdict) []byte {
	b := make([]byte, 0, 48+len(v.ID)+len(v.Origin))
	b = append(b, wireVersion, msgVerdict)
	return appendVerdict(b, v)
}

// fullState is what a push/pull carries.
type fullState struct {
	sender   string
	records  []Record      // ascending ID
	obs      []Observation // ascending (ID, Node)
	verdicts []Verdict     // ascending ID
}

// encodeStateMsg encodes a full state; each list must be sorted as
// fullState says.
func encodeStateMsg(st fullState) []byte {
	n := 24 + len(st.sender)
	for _, r := range st.records {
		n += 16 + len(r.ID) + len(r.Addr) + len(r.Origin)
	}
	for _, o := range st.obs {
		n += 16 + len(o.Node) + len(o.ID) + len(o.Detail)
	}
	for _, v := range st.verdicts {
		n += 48 + len(v.ID) + len(v.Origin)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion, msgState)
	b = appendString(b, st.sender)
	b = binary.AppendUvarint(b, uint64(len(st.records)))
	for _, r := range st.records {
		b = appendRecord(b, r)
	}
	b = binary.AppendUvarint(b, uint64(len(st.obs)))
	for _, o := range st.obs {
		b = appendObs(b, o)
	}
	b = binary.AppendUvarint(b, uint64(len(st.verdicts)))
	for _, v := range st.verdicts {
		b = appendVerdict(b, v)
	}
	return b
}

func encodeAckMsg(digest uint64) []byte {
	b := make([]byte, 0, 10)
	b = append(b, wireVersion, msgAck)
	return binary.BigEndian.AppendUint64(b, digest)
}

// decoder reads fields off a byte slice, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail(reject(reasonTruncated, "%s: truncated", what))
		return 0
	case n < 0:
		d.fail(reject(reasonMalformed, "%s: uvarint overflows", what))
		return 0
	case n > 1 && d.b[n-1] == 0:
		d.fail(reject(reasonMalformed, "%s: non-minimal uvarint", what))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(reject(reasonTruncated, "%s: truncated", what))
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) string(what string, max int) string {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return ""
	}
	if n > uint64(max) {
		d.fail(reject(reasonOversized, "%s: %d bytes, limit %d", what, n, max))
		return ""
	}
	if uint64(len(d.b)) < n {
		d.fail(reject(reasonTruncated, "%s: truncated", what))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) record() Record {
	var r Record
	r.ID = d.string("id", maxIDLen)
	r.Addr = d.string("addr", maxAddrLen)
	r.State = State(d.byte("state"))
	r.Version = d.uvarint("version")
	r.Origin = d.string("origin", maxOriginLen)
	if d.err == nil {
		if err := r.validate(); err != nil {
			d.fail(reject(reasonMalformed, "%w", err))
		}
	}
	return r
}

func (d *decoder) obs() Observation {
	var o Observation
	o.Node = d.string("node", maxOriginLen)
	o.ID = d.string("id", maxIDLen)
	switch d.byte("up") {
	case 0:
	case 1:
		o.Up = true
	default:
		d.fail(reject(reasonMalformed, "up: want 0 or 1"))
	}
	o.Version = d.uvarint("version")
	o.Detail = d.string("detail", maxDetailLen)
	if d.err == nil {
		if err := o.validate(); err != nil {
			d.fail(reject(reasonMalformed, "%w", err))
		}
	}
	return o
}

func (d *decoder) uint16(what string) uint16 {
	v := d.uvarint(what)
	if d.err == nil && v > 0xffff {
		d.fail(reject(reasonMalformed, "%s: %d out of range", what, v))
	}
	return uint16(v)
}

func (d *decoder) verdict() Verdict {
	var v Verdict
	v.ID = d.string("id", maxIDLen)
	v.Reason = VerdictReason(d.byte("reason"))
	v.Votes = d.uint16("votes")
	v.Voters = d.uint16("voters")
	v.Strikes = d.uint16("strikes")
	v.Changed = d.uvarint("changed")
	v.UpSince = d.uvarint("up since")
	v.Version = d.uvarint("version")
	v.Origin = d.string("origin", maxOriginLen)
	if d.err == nil {
		if err := v.validate(); err != nil {
			d.fail(reject(reasonMalformed, "%w", err))
		}
	}
	return v
}

// count reads a list length, bounded by what the remaining bytes can hold.
func (d *decoder) count(what string, limit, minLen int) uint64 {
	n := d.uvarint(what + " count")
	if d.err == nil && (n > uint64(limit) || n > uint64(len(d.b)/minLen)) {
		d.fail(reject(reasonOversized, "%s count %d for %d bytes", what, n, len(d.b)))
		return 0
	}
	return n
}

// header checks the version and type bytes.
func (d *decoder) header(want byte) {
	v := d.byte("version")
	t := d.byte("type")
	if d.err != nil {
		return
	}
	if v != wireVersion {
		d.fail(reject(reasonVersion, "protocol version %d, want %d", v, wireVersion))
		return
	}
	if t != want {
		d.fail(reject(reasonType, "message type %d, want %d", t, want))
	}
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) > 0 {
		d.fail(reject(reasonTrailing, "%d trailing bytes", len(d.b)))
	}
	return d.err
}

func decodeRecordMsg(b []byte) (Record, error) {
	if len(b) > maxMsgSize {
		return Record{}, reject(reasonOversized, "message of %d bytes", len(b))
	}
	d := decoder{b: b}
	d.header(msgRecord)
	r := d.record()
	if err := d.end(); err != nil {
		return Record{}, err
	}
	return r, nil
}

func decodeStateMsg(b []byte) (fullState, error) {
	var st fullState
	d := decoder{b: b}
	d.header(msgState)
	st.sender = d.string("sender", maxOriginLen)
	if d.err == nil {
		if err := validateName(st.sender); err != nil {
			d.fail(reject(reasonMalformed, "sender: %w", err))
		}
	}
	n := d.count("record", 2*maxRecords, minRecordLen)
	st.records = make([]Record, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		r := d.record()
		if d.err == nil && len(st.records) > 0 && cmp.Compare(st.records[len(st.records)-1].ID, r.ID) >= 0 {
			d.fail(reject(reasonMalformed, "record %q out of order", r.ID))
		}
		st.records = append(st.records, r)
	}
	n = d.count("observation", maxObservations, minObsLen)
	st.obs = make([]Observation, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		o := d.obs()
		if d.err == nil && len(st.obs) > 0 {
			p := st.obs[len(st.obs)-1]
			if cmp.Or(cmp.Compare(p.ID, o.ID), cmp.Compare(p.Node, o.Node)) >= 0 {
				d.fail(reject(reasonMalformed, "observation of %q by %q out of order", o.ID, o.Node))
			}
		}
		st.obs = append(st.obs, o)
	}
	n = d.count("verdict", maxVerdictBytes/minVerdictLen, minVerdictLen)
	st.verdicts = make([]Verdict, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		v := d.verdict()
		if d.err == nil && len(st.verdicts) > 0 && cmp.Compare(st.verdicts[len(st.verdicts)-1].ID, v.ID) >= 0 {
			d.fail(reject(reasonMalformed, "verdict of %q out of order", v.ID))
		}
		st.verdicts = append(st.verdicts, v)
	}
	if err := d.end(); err != nil {
		return fullState{}, err
	}
	return st, nil
}

func decodeObsMsg(b []byte) (Observation, error) {
	if len(b) > maxMsgSize {
		return Observation{}, reject(reasonOversized, "message of %d bytes", len(b))
	}
	d := decoder{b: b}
	d.header(msgObs)
	o := d.obs()
	if err := d.end(); err != nil {
		return Observation{}, err
	}
	return o, nil
}

func decodeVerdictMsg(b []byte) (Verdict, error) {
	if len(b) > maxMsgSize {
		return Verdict{}, reject(reasonOversized, "message of %d bytes", len(b))
	}
	d := decoder{b: b}
	d.header(msgVerdict)
	v := d.verdict()
	if err := d.end(); err != nil {
		return Verdict{}, err
	}
	return v, nil
}

func decodeAckMsg(b []byte) (uint64, error) {
	d := decoder{b: b}
	d.header(msgAck)
	if d.err == nil && len(d.b) < 8 {
		d.fail(reject(reasonTruncated, "digest: truncated"))
	}
	if d.err != nil {
		return 0, d.err
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	if err := d.end(); err != nil {
		return 0, err
	}
	return v, nil
}
