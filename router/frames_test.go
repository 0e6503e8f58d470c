package router

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gobwas/ws"
)

// trackInPieces feeds stream to a frameTracker in pieces of the given
// sizes (cycled), as reads would deliver it, and returns the bytes it
// let through and how a close or error ended it.
func trackInPieces(stream []byte, sizes []int) (out []byte, closed bool, err error) {
	var t frameTracker
	buf := make([]byte, maxFrameHeader+len(stream)+1)
	for i := 0; len(stream) > 0; i++ {
		size := 1
		if len(sizes) > 0 {
			size = max(1, sizes[i%len(sizes)])
		}
		size = min(size, len(stream))
		piece := stream[:size]
		stream = stream[size:]
		start := maxFrameHeader - t.carry(buf[:maxFrameHeader])
		end := maxFrameHeader + copy(buf[maxFrameHeader:], piece)
		data := buf[start:end]
		n, cl, e := t.advance(data)
		out = append(out, data[:n]...)
		if cl || e != nil {
			return out, cl, e
		}
	}
	return out, false, nil
}

// wholeFrames is the reference: ws.ReadHeader over the whole stream.
func wholeFrames(stream []byte) (out []byte, closed bool, err error) {
	r := bytes.NewReader(stream)
	for r.Len() > 0 {
		before := r.Len()
		h, e := ws.ReadHeader(r)
		if e != nil {
			if errors.Is(e, ws.ErrHeaderLengthMSB) {
				return out, false, e
			}
			return out, false, nil // incomplete header at the end
		}
		hl := before - r.Len()
		start := len(stream) - before
		end := start + hl + int(min(h.Length, int64(r.Len())))
		out = append(out, stream[start:end]...)
		if int64(r.Len()) < h.Length {
			return out, false, nil // payload continues beyond the stream
		}
		r.Seek(int64(end), 0)
		if h.OpCode == ws.OpClose {
			return out, true, nil
		}
	}
	return out, false, nil
}

func frame(f ws.Frame) []byte { return ws.MustCompileFrame(f) }

var frameCases = []struct {
	name   string
	stream []byte
}{
	{"small", frame(ws.NewTextFrame([]byte("hello")))},
	{"two", append(frame(ws.NewBinaryFrame([]byte{1, 2})), frame(ws.NewTextFrame([]byte("x")))...)},
	{"len16", frame(ws.NewBinaryFrame(make([]byte, 300)))},
	{"len64", frame(ws.NewBinaryFrame(make([]byte, 70000)))},
	{"masked", frame(ws.MaskFrame(ws.NewTextFrame([]byte("masked"))))},
	{"close then more", append(frame(ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "bye"))), frame(ws.NewTextFrame([]byte("after")))...)},
	{"empty close", append(frame(ws.NewCloseFrame(nil)), 1, 2, 3)},
	{"msb", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1}},
	{"cut header", []byte{0x82, 126, 1}},
}

func TestFrameTracker(t *testing.T) {
	for _, tc := range frameCases {
		t.Run(tc.name, func(t *testing.T) {
			want, wantClosed, wantErr := wholeFrames(tc.stream)
			for _, sizes := range [][]int{{1}, {2, 3}, {7}, {len(tc.stream)}} {
				got, closed, err := trackInPieces(tc.stream, sizes)
				if !bytes.Equal(got, want) || closed != wantClosed || (err != nil) != (wantErr != nil) {
					t.Errorf("pieces %v: %d bytes, closed %v, err %v; want %d bytes, closed %v, err %v",
						sizes, len(got), closed, err, len(want), wantClosed, wantErr)
				}
			}
		})
	}
}

// FuzzFrameTracker checks that tracking frames piece by piece lets through
// exactly what a whole-stream parse finds, however the stream is cut.
func FuzzFrameTracker(f *testing.F) {
	for _, tc := range frameCases {
		f.Add(tc.stream, []byte{1, 5, 3})
	}
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		if len(stream) > 1<<16 {
			return
		}
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)
		}
		want, wantClosed, wantErr := wholeFrames(stream)
		got, closed, err := trackInPieces(stream, sizes)
		if !bytes.Equal(got, want) || closed != wantClosed || (err != nil) != (wantErr != nil) {
			t.Fatalf("cuts %v: %d bytes, closed %v, err %v; want %d bytes, closed %v, err %v",
				sizes, len(got), closed, err, len(want), wantClosed, wantErr)
		}
	})
}
