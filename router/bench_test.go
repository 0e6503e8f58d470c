package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/rs/zerolog"
)

// Hot-path benchmarks in benchstat form (make bench-go runs them with
// -count 10): routing-key extraction, the WebSocket handshake through a
// Router, the relay's echo round trip, and frame tracking. The ring's
// lookup benchmarks are in ring/bench_test.go.

func BenchmarkKey(b *testing.B) {
	e, err := NewKeyExtractor(KeyConfig{})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct{ name, target, cookie string }{
		{"query", "/ws?session_id=abc123&x=1", ""},
		{"cookie", "/ws?x=1", "a=1; sid=abc123"},
		{"ip", "/ws", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, tc.target, nil)
			if tc.cookie != "" {
				req.Header.Set("Cookie", tc.cookie)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := e.Key(req); !ok {
					b.Fatal("no key")
				}
			}
		})
	}
}

// gobwasEcho is a lean WebSocket echo backend, so that the proxy's cost
// dominates what the benchmarks measure.
func gobwasEcho(tb testing.TB) Backend {
	tb.Helper()
	addr := serveTCP(tb, func(c net.Conn) {
		if _, err := ws.Upgrade(c); err != nil {
			return
		}
		br := bufio.NewReader(c)
		for {
			h, err := ws.ReadHeader(br)
			if err != nil {
				return
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(br, p); err != nil {
				return
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			if h.OpCode == ws.OpClose {
				return
			}
			if err := ws.WriteFrame(c, ws.NewFrame(h.OpCode, h.Fin, p)); err != nil {
				return
			}
		}
	})
	return Backend{ID: "echo", Addr: addr}
}

func benchFront(tb testing.TB) string {
	tb.Helper()
	rt, err := New(Config{Picker: &fixedPicker{backends: []Backend{gobwasEcho(tb)}}, Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	tb.Cleanup(srv.Close)
	tb.Cleanup(func() { rt.Close() })
	return strings.TrimPrefix(srv.URL, "http://")
}

// BenchmarkHandshake opens and closes one WebSocket through a Router per
// iteration: client dial, upgrade, backend dial and handshake, 101.
func BenchmarkHandshake(b *testing.B) {
	addr := benchFront(b)
	url := "ws://" + addr + "/ws?session_id=bench"
	b.ReportAllocs()
	for b.Loop() {
		c, _, _, err := ws.Dial(context.Background(), url)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkRelayEcho is one message's round trip through a Router.
func BenchmarkRelayEcho(b *testing.B) {
	for _, size := range []int{64, 4096, 65536} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			addr := benchFront(b)
			c, br, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws?session_id=bench")
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			var r io.Reader = c
			if br != nil {
				r = io.MultiReader(br, c)
			}
			r = bufio.NewReaderSize(r, 64<<10)
			frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewBinaryFrame(make([]byte, size))))
			p := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(frame); err != nil {
					b.Fatal(err)
				}
				h, err := ws.ReadHeader(r)
				if err != nil || h.Length != int64(size) {
					b.Fatalf("header %+v, %v", h, err)
				}
				if _, err := io.ReadFull(r, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFrameTracker follows frame boundaries over a read's worth of
// frames of one size.
func BenchmarkFrameTracker(b *testing.B) {
	for _, size := range []int{64, 1024, 16384} {
		b.Run(fmt.Sprintf("frame=%d", size), func(b *testing.B) {
			frame := ws.MustCompileFrame(ws.NewBinaryFrame(make([]byte, size)))
			var stream []byte
			for len(stream) < 16<<10 {
				stream = append(stream, frame...)
			}
			var t frameTracker
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				if n, _, err := t.advance(stream); n != len(stream) || err != nil {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// BenchmarkClientFrames checks the headers of a read's worth of client
// frames of one size: the cost the relay adds per client byte.
func BenchmarkClientFrames(b *testing.B) {
	for _, size := range []int{64, 1024, 16384} {
		b.Run(fmt.Sprintf("frame=%d", size), func(b *testing.B) {
			frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewBinaryFrame(make([]byte, size))))
			var stream []byte
			for len(stream) < 16<<10 {
				stream = append(stream, frame...)
			}
			var f clientFrames
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				if err := f.check(stream, DefaultWSMaxFrameSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRelayUpstream streams client frames of one size, 16 KiB per
// write, through a Router to a backend that reads and drops them: the
// relay's client → backend throughput, where the client frame checks sit.
func BenchmarkRelayUpstream(b *testing.B) {
	for _, size := range []int{64, 1024, 16384} {
		b.Run(fmt.Sprintf("frame=%d", size), func(b *testing.B) {
			sink := serveTCP(b, func(c net.Conn) {
				if _, err := ws.Upgrade(c); err != nil {
					return
				}
				io.Copy(io.Discard, c)
			})
			rt, err := New(Config{Picker: &fixedPicker{backends: []Backend{{ID: "sink", Addr: sink}}}, Logger: zerolog.Nop()})
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(rt)
			defer srv.Close()
			defer rt.Close()
			c, _, _, err := ws.Dial(context.Background(), "ws://"+strings.TrimPrefix(srv.URL, "http://")+"/ws?session_id=bench")
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewBinaryFrame(make([]byte, size))))
			var batch []byte
			for len(batch) == 0 || len(batch)+len(frame) <= 16<<10 {
				batch = append(batch, frame...)
			}
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
