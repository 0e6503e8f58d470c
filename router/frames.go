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
	// code holds the first payload bytes of the last close frame (its
	// status code), codeN how many of them were seen: for reporting only.
	code  [2]byte
	codeN uint8
}

// closeCode returns the status code of the last close frame seen, or
// CloseNoStatus if it had none.
func (t *frameTracker) closeCode() uint16 {
	if t.codeN < 2 {
		return CloseNoStatus
	}
	return binary.BigEndian.Uint16(t.code[:])
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
			if t.inClose { // a control frame: once per session
				for i := 0; i < k && t.codeN < 2; i++ {
					t.code[t.codeN] = p[n+i]
					t.codeN++
				}
			}
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
		t.codeN = 0
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

// protocolError is a client frame the router refuses; the client gets a
// close frame with code, and the session ends.
type protocolError struct {
	code   uint16
	reason string
}

func (e *protocolError) Error() string { return "client frame refused: " + e.reason }

var (
	errUnmasked  = &protocolError{CloseProtocolError, "unmasked frame"}
	errLengthMSB = &protocolError{CloseProtocolError, "frame length with the high bit set"}
	errTooBig    = &protocolError{CloseMessageTooBig, "frame too big"}
)

// clientFrames checks the headers of the client's frames in a byte stream
// that arrives in arbitrary pieces, holding none of it: RFC 6455 5.1 says
// a server must close on an unmasked client frame, and a frame over the
// size limit would otherwise reach the backend whole. A header split
// over pieces is decoded byte by byte, into left; only its position is
// kept. It is 11 bytes, because it lives in every session.
//
// It is not safe for concurrent use; one reader owns it.
type clientFrames struct {
	left int64 // payload bytes of the current frame still to come; inside a header, the length so far
	hpos uint8 // 0 between frames; else header bytes seen of the current frame
	hlen uint8 // the current header's length, once its second byte is seen
	// closed: a close frame's header went by (for reporting who closed).
	closed bool
}

// check follows p, the next piece of the stream, and returns an error for
// the first header no client may send: unmasked (RFC 6455 5.1), a 64-bit
// length with the high bit set, or a payload over limit. After an error the
// checker is spent: the session ends.
func (f *clientFrames) check(p []byte, limit int64) error {
	for i := 0; i < len(p); {
		if f.left > 0 && f.hpos == 0 {
			k := int(min(f.left, int64(len(p)-i)))
			i += k
			f.left -= int64(k)
			continue
		}
		if f.hpos == 0 && len(p)-i >= maxFrameHeader {
			// Whole headers, and the payloads behind them: the common case.
			for len(p)-i >= maxFrameHeader {
				if p[i]&0x0f == byte(ws.OpClose) {
					f.closed = true
				}
				b1 := p[i+1]
				if b1&0x80 == 0 {
					return errUnmasked
				}
				var length int64
				switch l := b1 & 0x7f; l {
				case 126:
					length = int64(binary.BigEndian.Uint16(p[i+2:]))
					i += 2 + 2 + 4
				case 127:
					if p[i+2]&0x80 != 0 {
						return errLengthMSB
					}
					length = int64(binary.BigEndian.Uint64(p[i+2:]))
					i += 2 + 8 + 4
				default:
					length = int64(l)
					i += 2 + 4
				}
				if length > limit {
					return errTooBig
				}
				if rest := int64(len(p) - i); length >= rest {
					f.left = length - rest
					return nil
				}
				i += int(length)
			}
			continue
		}
		// A header split over pieces, a byte at a time.
		b := p[i]
		i++
		switch pos := f.hpos; {
		case pos == 0:
			f.left = 0
			if b&0x0f == byte(ws.OpClose) {
				f.closed = true
			}
		case pos == 1:
			if b&0x80 == 0 {
				return errUnmasked
			}
			switch l := b & 0x7f; l {
			case 126:
				f.hlen = 2 + 2 + 4
			case 127:
				f.hlen = 2 + 8 + 4
			default:
				f.hlen = 2 + 4
				f.left = int64(l)
			}
		case pos < f.hlen-4: // extended length, big-endian
			if pos == 2 && f.hlen == 14 && b&0x80 != 0 {
				return errLengthMSB
			}
			f.left = f.left<<8 | int64(b)
		}
		f.hpos++
		if f.hpos >= 2 && f.hpos == f.hlen {
			if f.left > limit {
				return errTooBig
			}
			f.hpos = 0
		}
	}
	return nil
}
