package gossip

import (
	"encoding/binary"
	"fmt"
)

// Meta is what a node announces about itself. It rides in every memberlist
// alive message, so it is kept to tens of bytes (150 at most).
//
// Wire format: version(1 byte, = 2) role(1) state(1) uvarint(len) proxy_addr
// uvarint(len) admin_addr config_fp(8, big endian) ring_fp(8, big endian)
// flags(1: bit 0 ready). Version 1, the release before, had no flags byte;
// DecodeMeta still reads it, so a mesh can be upgraded one node at a time
// (version 1 nodes list version 2 nodes with a meta error meanwhile; see
// the README's Upgrading).
type Meta struct {
	Role      Role
	State     NodeState
	ProxyAddr string // at most 64 bytes; the address clients reach the node at
	AdminAddr string // at most 64 bytes
	ConfigFP  uint64 // fingerprint of the mesh-wide config
	RingFP    uint64 // fingerprint of this node's current ring
	// Ready is the node's own readiness (synced, a ring with backends, not
	// draining): what its /readyz says.
	Ready bool
	// ReadyUnknown is set by DecodeMeta on a version 1 meta, whose node
	// predates the flag; Encode ignores it.
	ReadyUnknown bool
}

const (
	metaVersion    = 2
	metaVersionV1  = 1
	maxMetaAddrLen = 64
	// maxMetaLen is the longest meta we encode; memberlist panics past 512.
	maxMetaLen = 3 + 2*(1+maxMetaAddrLen) + 16 + 1
	metaReady  = 1 << 0
	// memberlistMetaLimit is memberlist.MetaMaxSize.
	memberlistMetaLimit = 512
)

// Encode returns the wire form of m. It returns an error, never panics, for a
// field out of range; the result is never longer than 512 bytes.
func (m Meta) Encode() ([]byte, error) {
	if !m.Role.valid() {
		return nil, fmt.Errorf("encode meta: unknown role %d", uint8(m.Role))
	}
	if !m.State.valid() {
		return nil, fmt.Errorf("encode meta: unknown state %d", uint8(m.State))
	}
	if len(m.ProxyAddr) > maxMetaAddrLen || len(m.AdminAddr) > maxMetaAddrLen {
		return nil, fmt.Errorf("encode meta: address longer than %d bytes", maxMetaAddrLen)
	}
	b := make([]byte, 0, maxMetaLen)
	b = append(b, metaVersion, byte(m.Role), byte(m.State))
	b = appendString(b, m.ProxyAddr)
	b = appendString(b, m.AdminAddr)
	b = binary.BigEndian.AppendUint64(b, m.ConfigFP)
	b = binary.BigEndian.AppendUint64(b, m.RingFP)
	var flags byte
	if m.Ready {
		flags |= metaReady
	}
	b = append(b, flags)
	if len(b) > memberlistMetaLimit { // unreachable with the limits above
		return nil, fmt.Errorf("encode meta: %d bytes, limit %d", len(b), memberlistMetaLimit)
	}
	return b, nil
}

// DecodeMeta parses what [Meta.Encode] returns, and the version 1 meta of
// the release before (with ReadyUnknown set), strictly: a meta of another
// version, an unknown role, state or flag, or trailing bytes are errors.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) > memberlistMetaLimit {
		return m, reject(reasonOversized, "meta of %d bytes", len(b))
	}
	d := decoder{b: b}
	v := d.byte("meta version")
	if d.err == nil && v != metaVersion && v != metaVersionV1 {
		return m, fmt.Errorf("decode meta: %w", reject(reasonVersion, "meta version %d, want %d or %d", v, metaVersionV1, metaVersion))
	}
	m.Role = Role(d.byte("role"))
	m.State = NodeState(d.byte("node state"))
	m.ProxyAddr = d.string("proxy addr", maxMetaAddrLen)
	m.AdminAddr = d.string("admin addr", maxMetaAddrLen)
	if d.err == nil && len(d.b) < 16 {
		d.fail(reject(reasonTruncated, "fingerprints: truncated"))
	}
	if d.err != nil {
		return Meta{}, fmt.Errorf("decode meta: %w", d.err)
	}
	m.ConfigFP = binary.BigEndian.Uint64(d.b)
	m.RingFP = binary.BigEndian.Uint64(d.b[8:])
	d.b = d.b[16:]
	if v == metaVersionV1 {
		m.ReadyUnknown = true
	} else {
		switch f := d.byte("flags"); {
		case d.err != nil:
			return Meta{}, fmt.Errorf("decode meta: %w", d.err)
		case f&^metaReady != 0:
			return Meta{}, fmt.Errorf("decode meta: %w", reject(reasonMalformed, "flags: unknown bits %#x", f))
		default:
			m.Ready = f&metaReady != 0
		}
	}
	if err := d.end(); err != nil {
		return Meta{}, fmt.Errorf("decode meta: %w", err)
	}
	if !m.Role.valid() {
		return Meta{}, fmt.Errorf("decode meta: %w", reject(reasonMalformed, "unknown role %d", uint8(m.Role)))
	}
	if !m.State.valid() {
		return Meta{}, fmt.Errorf("decode meta: %w", reject(reasonMalformed, "unknown state %d", uint8(m.State)))
	}
	return m, nil
}
