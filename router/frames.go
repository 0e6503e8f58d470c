package router

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// maxFrameHeader is the longest WebSocket frame header: 2 bytes, an 8-byte
// extended length and a 4-byte mask key.
const maxFrameHeader = ws.MaxHeaderSize

// frameTracker follows frame boundaries in a byte stream that arrives in
// arbitrary pieces, without holding any frame: only an incomplete header
// (at most 13 bytes) is kept between pieces. The node needs the boundaries
// to put a close frame between two frames, never inside one.
//
// It is not safe for concurrent use; one reader owns it.
type frameTracker struct {
	hdr     [maxFrameHeader]byte // incomplete header carried to the next piece
	hdrN    uint8
	left    int64 // payload bytes of the current frame not yet seen
	inClose bool  // the current frame is a close frame
}

// advance accounts for p, which must begin with the carried header bytes
// (see carry). It returns how many leading bytes of p can be forwarded now:
// whole frames, then possibly a frame whose header is complete but whose
// payload continues in a later piece (then midFrame reports true). The
// bytes after n, if any, are either an incomplete header, which advance
// keeps for the next piece, or, when closed is true, whatever followed a
// close frame: nothing may follow a close frame, so they are to be dropped.
// err is a header no peer may send (ws.ErrHeaderLengthMSB); the bytes
// before it are whole frames.
func (t *frameTracker) advance(p []byte) (n int, closed bool, err error) {
	t.hdrN = 0
	for n < len(p) {
		if t.left > 0 {
			k := int(min(t.left, int64(len(p)-n)))
			n += k
			t.left -= int64(k)
			if t.left > 0 {
				return n, false, nil
			}
			if t.inClose {
				return n, true, nil
			}
			continue
		}
		hl, length, op, ok, err := parseFrameHeader(p[n:])
		if err != nil {
			return n, false, err
		}
		if !ok {
			t.hdrN = uint8(copy(t.hdr[:], p[n:]))
			return n, false, nil
		}
		n += hl
		t.left = length
		t.inClose = op == ws.OpClose
		if t.left == 0 && t.inClose {
			return n, true, nil
		}
	}
	return n, false, nil
}

// midFrame reports whether the last forwarded byte was inside a frame: a
// close frame must not be written until the frame has ended.
func (t *frameTracker) midFrame() bool { return t.left > 0 }

// carry copies the header bytes kept by the last advance to the end of
// dst and returns how many; the caller reads the next piece right behind
// them. dst must have room for maxFrameHeader-1 bytes.
func (t *frameTracker) carry(dst []byte) int {
	return copy(dst[len(dst)-int(t.hdrN):], t.hdr[:t.hdrN])
}

// parseFrameHeader decodes the frame header at the start of p. ok is false
// when p holds only part of it. It accepts what ws.ReadHeader accepts.
func parseFrameHeader(p []byte) (hl int, length int64, op ws.OpCode, ok bool, err error) {
	if len(p) < 2 {
		return 0, 0, 0, false, nil
	}
	op = ws.OpCode(p[0] & 0x0f)
	hl = 2
	if p[1]&0x80 != 0 {
		hl += 4
	}
	switch l := p[1] & 0x7f; l {
	case 126:
		hl += 2
		if len(p) < hl {
			return 0, 0, 0, false, nil
		}
		length = int64(binary.BigEndian.Uint16(p[2:4]))
	case 127:
		hl += 8
		if len(p) < hl {
			return 0, 0, 0, false, nil
		}
		if p[2]&0x80 != 0 {
			return 0, 0, 0, false, ws.ErrHeaderLengthMSB
		}
		length = int64(binary.BigEndian.Uint64(p[2:10]))
	default:
		length = int64(l)
	}
	if len(p) < hl {
		return 0, 0, 0, false, nil
	}
	return hl, length, op, true, nil
}
