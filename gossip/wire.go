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
//	message  = version(1 byte, = 1) type(1 byte) body
//	record   = uvarint(len) id  uvarint(len) addr  state(1 byte)  uvarint(version)  uvarint(len) origin
//	msgRecord (type 1, one delta)   body = record
//	msgState  (type 2, push/pull)   body = uvarint(len) sender  uvarint(count)  record*count (ascending id)
//	msgAck    (type 3, ping ack)    body = digest(8 bytes, big endian)
//
// Decoding is strict: every length is checked, uvarints must be minimal, an
// unknown state, type or version is rejected and no trailing byte is allowed,
// so each value has exactly one encoding.
const (
	wireVersion = 1

	msgRecord = 1
	msgState  = 2
	msgAck    = 3

	// maxRecordMsg is the size of a record message with every field at its
	// maximum length: it must fit memberlist's packet budget.
	maxRecordMsg = 2 + 2 + maxIDLen + 2 + maxAddrLen + 1 + binary.MaxVarintLen64 + 2 + maxOriginLen
	// minRecordLen is the smallest encoded record ("x", "h:1", state,
	// version 0, "o"), used to bound the count of a full state.
	minRecordLen = 2 + 4 + 1 + 1 + 2
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

// encodeStateMsg encodes a full state; recs must be sorted by ID.
func encodeStateMsg(sender string, recs []Record) []byte {
	n := 16 + len(sender)
	for _, r := range recs {
		n += 16 + len(r.ID) + len(r.Addr) + len(r.Origin)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion, msgState)
	b = appendString(b, sender)
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = appendRecord(b, r)
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

func decodeStateMsg(b []byte) (sender string, recs []Record, err error) {
	d := decoder{b: b}
	d.header(msgState)
	sender = d.string("sender", maxOriginLen)
	if d.err == nil {
		if err := validateName(sender); err != nil {
			d.fail(reject(reasonMalformed, "sender: %w", err))
		}
	}
	n := d.uvarint("count")
	if d.err == nil && (n > 2*maxRecords || n > uint64(len(d.b)/minRecordLen)) {
		d.fail(reject(reasonOversized, "count %d for %d bytes", n, len(d.b)))
	}
	if d.err != nil {
		return "", nil, d.err
	}
	recs = make([]Record, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		r := d.record()
		if d.err == nil && len(recs) > 0 && cmp.Compare(recs[len(recs)-1].ID, r.ID) >= 0 {
			d.fail(reject(reasonMalformed, "record %q out of order", r.ID))
		}
		recs = append(recs, r)
	}
	if err := d.end(); err != nil {
		return "", nil, err
	}
	return sender, recs, nil
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
