package gossip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format of gossip messages, hand-written with encoding/binary
// uvarints:
//
//	message = version(1 byte, = 3) type(1 byte) body
//	entry   = kind(1 byte) uvarint(len) key  uvarint(version)  uvarint(len) origin
//	          flags(1 byte: bit 0 deleted, the others 0)  uvarint(len) value
//	msgEntry (type 1, one delta)  body = entry
//	msgState (type 2, push/pull)  body = uvarint(len) sender  uvarint(count) entry*count
//	                                     (strictly ascending by kind, then key)
//	msgAck   (type 3, ping ack)   body = digest(8 bytes, big endian)
//
// Version 3 carries every kind of state as one opaque entry; version 2 had
// a message type per kind (catalog records, observations, verdicts), and
// version 1 records only. A peer of another version is refused, counted
// (reason "version") and logged with both versions named: see the README's
// "Upgrading" for the rolling procedure. A kind this node does not know
// (added by a newer release) is skipped in a full state and counted, not
// refused with the rest, so adding a kind needs no version bump.
//
// Decoding is strict: every length is checked, uvarints must be minimal, an
// unknown type or version is rejected and no trailing byte is allowed, so
// each value has exactly one encoding.
const (
	wireVersion = 3

	msgEntry = 1
	msgState = 2
	msgAck   = 3

	// Field limits. maxKeyLen leaves room for two names joined by a NUL (an
	// observation's backend and node).
	maxKeyLen    = 512
	maxValueLen  = 512
	maxOriginLen = 255
	// maxEntryLen is an entry with every field at its limit, and
	// maxEntryMsg its message: it must fit memberlist's packet budget.
	maxEntryLen = 1 + 2 + maxKeyLen + binary.MaxVarintLen64 + 2 + maxOriginLen + 1 + 2 + maxValueLen
	maxEntryMsg = 2 + maxEntryLen
	// minEntryLen is the smallest encoded entry (kind, "x", version 0, "o",
	// flags, empty value), used to bound the count of a full state.
	minEntryLen = 1 + 2 + 1 + 2 + 1 + 1
	// maxStateEntries bounds the count a full state may claim.
	maxStateEntries = 200_000
	// maxFloors bounds the expired tombstones remembered.
	maxFloors = 10_000
	// packetBudget is what memberlist leaves for one user broadcast with
	// encryption on (UDPBufferSize 1400 less headers and the cipher's 29
	// bytes).
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
	reasonKind      = "kind"
	reasonSecret    = "secret"
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

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func appendEntry(b []byte, e Entry) []byte {
	b = append(b, byte(e.Kind))
	b = appendString(b, e.Key)
	b = binary.AppendUvarint(b, e.Version)
	b = appendString(b, e.Origin)
	flags := byte(0)
	if e.Deleted {
		flags = 1
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(e.Value)))
	return append(b, e.Value...)
}

func encodeEntryMsg(e Entry) []byte {
	b := make([]byte, 0, 2+entrySize(e))
	b = append(b, wireVersion, msgEntry)
	return appendEntry(b, e)
}

// encodeStateMsg encodes a full state; entries must be sorted by (kind,
// key) without duplicates.
func encodeStateMsg(sender string, entries []Entry) []byte {
	n := 2 + 2 + len(sender) + binary.MaxVarintLen64
	for _, e := range entries {
		n += entrySize(e)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion, msgState)
	b = appendString(b, sender)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = appendEntry(b, e)
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

func (d *decoder) bytes(what string, max int) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail(reject(reasonOversized, "%s: %d bytes, limit %d", what, n, max))
		return nil
	}
	if uint64(len(d.b)) < n {
		d.fail(reject(reasonTruncated, "%s: truncated", what))
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string(what string, max int) string { return string(d.bytes(what, max)) }

// entry reads one entry and checks its shape; the kind's own rule is the
// store's to apply.
func (d *decoder) entry() Entry {
	var e Entry
	e.Kind = Kind(d.byte("kind"))
	e.Key = d.string("key", maxKeyLen)
	e.Version = d.uvarint("version")
	e.Origin = d.string("origin", maxOriginLen)
	switch d.byte("flags") {
	case 0:
	case 1:
		e.Deleted = true
	default:
		d.fail(reject(reasonMalformed, "flags: unknown bits"))
	}
	if v := d.bytes("value", maxValueLen); len(v) > 0 {
		e.Value = bytes.Clone(v)
	}
	if d.err == nil {
		if e.Kind == 0 {
			d.fail(reject(reasonMalformed, "kind 0"))
		} else if err := e.validate(); err != nil {
			d.fail(reject(reasonMalformed, "%w", err))
		}
	}
	return e
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

// header checks the version and type bytes. A message of another version
// is named as such, so an operator mixing releases reads why in the log.
func (d *decoder) header(want byte) {
	v := d.byte("version")
	t := d.byte("type")
	if d.err != nil {
		return
	}
	if v != wireVersion {
		d.fail(reject(reasonVersion, "peer speaks gossip protocol version %d, this node %d", v, wireVersion))
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

func decodeEntryMsg(b []byte) (Entry, error) {
	if len(b) > maxMsgSize {
		return Entry{}, reject(reasonOversized, "message of %d bytes", len(b))
	}
	d := decoder{b: b}
	d.header(msgEntry)
	e := d.entry()
	if err := d.end(); err != nil {
		return Entry{}, err
	}
	return e, nil
}

func decodeStateMsg(b []byte) (sender string, entries []Entry, err error) {
	d := decoder{b: b}
	d.header(msgState)
	sender = d.string("sender", maxOriginLen)
	if d.err == nil {
		if err := validateName(sender); err != nil {
			d.fail(reject(reasonMalformed, "sender: %w", err))
		}
	}
	n := d.count("entry", maxStateEntries, minEntryLen)
	entries = make([]Entry, 0, n)
	for i := uint64(0); i < n && d.err == nil; i++ {
		e := d.entry()
		if d.err == nil && len(entries) > 0 && compareEntries(entries[len(entries)-1], e) >= 0 {
			d.fail(reject(reasonMalformed, "entry %d/%q out of order", e.Kind, e.Key))
		}
		entries = append(entries, e)
	}
	if err := d.end(); err != nil {
		return "", nil, err
	}
	return sender, entries, nil
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
