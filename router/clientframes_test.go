package router

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gobwas/ws"
)

// checkInPieces feeds stream to a clientFrames in pieces of the given
// sizes (cycled), as reads would deliver it.
func checkInPieces(stream []byte, sizes []int, limit int64) error {
	var f clientFrames
	for i := 0; len(stream) > 0; i++ {
		size := 1
		if len(sizes) > 0 {
			size = max(1, sizes[i%len(sizes)])
		}
		size = min(size, len(stream))
		if err := f.check(stream[:size], limit); err != nil {
			return err
		}
		stream = stream[size:]
	}
	return nil
}

// checkWhole is the reference: ws.ReadHeader over the whole stream. A
// header cut at the end is judged on the bytes there, as check does: the
// mask bit is in its second byte, the high bit of a 64-bit length in its
// third.
func checkWhole(stream []byte, limit int64) error {
	r := bytes.NewReader(stream)
	for r.Len() > 0 {
		rest := stream[len(stream)-r.Len():]
		h, err := ws.ReadHeader(r)
		switch {
		case errors.Is(err, ws.ErrHeaderLengthMSB):
			if rest[1]&0x80 == 0 {
				return errUnmasked
			}
			return errLengthMSB
		case err != nil: // cut header
			if len(rest) >= 2 && rest[1]&0x80 == 0 {
				return errUnmasked
			}
			if len(rest) >= 3 && rest[1]&0x7f == 127 && rest[2]&0x80 != 0 {
				return errLengthMSB
			}
			return nil
		case !h.Masked:
			return errUnmasked
		case h.Length > limit:
			return errTooBig
		}
		if int64(r.Len()) <= h.Length {
			return nil
		}
		r.Seek(h.Length, io.SeekCurrent)
	}
	return nil
}

func masked(f ws.Frame) []byte { return frame(ws.MaskFrame(f)) }

var clientFrameCases = []struct {
	name   string
	stream []byte
	want   error
}{
	{"small", masked(ws.NewTextFrame([]byte("hello"))), nil},
	{"two", append(masked(ws.NewBinaryFrame([]byte{1, 2})), masked(ws.NewTextFrame([]byte("x")))...), nil},
	{"len16", masked(ws.NewBinaryFrame(make([]byte, 300))), nil},
	{"len64", masked(ws.NewBinaryFrame(make([]byte, 70000))), errTooBig},
	{"at limit", masked(ws.NewBinaryFrame(make([]byte, 1000))), nil},
	{"over limit", masked(ws.NewBinaryFrame(make([]byte, 1001))), errTooBig},
	{"over limit, declared", []byte{0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}, errTooBig},
	{"unmasked", frame(ws.NewTextFrame([]byte("plain"))), errUnmasked},
	{"unmasked second", append(masked(ws.NewTextFrame([]byte("ok"))), frame(ws.NewTextFrame([]byte("plain")))...), errUnmasked},
	{"msb", []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, errLengthMSB},
	{"cut header", []byte{0x82, 0xfe, 1}, nil},
	{"empty", masked(ws.NewPingFrame(nil)), nil},
}

func TestClientFrames(t *testing.T) {
	const limit = 1000
	for _, tc := range clientFrameCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkWhole(tc.stream, limit); got != tc.want {
				t.Fatalf("reference says %v; want %v", got, tc.want)
			}
			for _, sizes := range [][]int{{1}, {2, 3}, {7}, {13, 1}, {len(tc.stream)}} {
				if got := checkInPieces(tc.stream, sizes, limit); got != tc.want {
					t.Errorf("pieces %v: %v; want %v", sizes, got, tc.want)
				}
			}
		})
	}
}

// FuzzClientFrames checks that the client frame checker finds what a
// whole-stream parse finds, however the stream is cut, and never panics.
func FuzzClientFrames(f *testing.F) {
	for _, tc := range clientFrameCases {
		f.Add(tc.stream, []byte{1, 5, 3}, int64(1000))
	}
	f.Fuzz(func(t *testing.T, stream, cuts []byte, limit int64) {
		if limit < 0 {
			limit = -limit
		}
		sizes := make([]int, len(cuts))
		for i, c := range cuts {
			sizes[i] = int(c)
		}
		want := checkWhole(stream, limit)
		if got := checkInPieces(stream, sizes, limit); got != want {
			t.Fatalf("pieces %v: %v; want %v", sizes, got, want)
		}
	})
}

// A client frame that is unmasked, or over WSMaxFrameSize, closes the
// WebSocket with 1002 or 1009; the frame does not reach the backend.
func TestClientFrameRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		code  uint16
	}{
		{"unmasked", frame(ws.NewTextFrame([]byte("plain"))), CloseProtocolError},
		{"too big", masked(ws.NewBinaryFrame(make([]byte, 5000))), CloseMessageTooBig},
	} {
		relayModesAll(t, tc.name, func(t *testing.T, goroutines bool) {
			b := newBackend(t, "echo", echoWS("echo", nil, nil))
			rt, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}, WSMaxFrameSize: 4096})
			rt.pollFailed = goroutines
			c, br, res := rawClient(t, strings.TrimPrefix(front.URL, "http://"))
			if res.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status = %d; want 101", res.StatusCode)
			}
			// A good frame first: it is echoed.
			c.Write(masked(ws.NewTextFrame([]byte("fine"))))
			if h, err := ws.ReadHeader(br); err != nil || h.OpCode != ws.OpText || h.Length != 4 {
				t.Fatalf("echo %+v, %v; want a 4-byte text frame", h, err)
			}
			io.ReadFull(br, make([]byte, 4))
			c.Write(tc.frame)
			h, err := ws.ReadHeader(br)
			if err != nil || h.OpCode != ws.OpClose {
				t.Fatalf("frame %+v, %v; want a close frame", h, err)
			}
			p := make([]byte, h.Length)
			io.ReadFull(br, p)
			if len(p) < 2 || uint16(p[0])<<8|uint16(p[1]) != tc.code {
				t.Fatalf("close payload %q; want code %d", p, tc.code)
			}
			waitFor(t, "the session to end", func() bool { return rt.ActiveWebSockets() == 0 })
			if n := rt.WSClientFrameErrors(); n != 1 {
				t.Errorf("WSClientFrameErrors = %d; want 1", n)
			}
		})
	}
}
