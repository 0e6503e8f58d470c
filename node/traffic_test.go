package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	dto "github.com/prometheus/client_model/go"
)

// trafficBackend is an HTTP server that answers plain requests "hello"
// and echoes WebSocket frames: a text "bye" makes it echo, then close
// with 1011; a client close is answered with the same code.
func trafficBackend(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			_, _ = w.Write([]byte("hello"))
			return
		}
		c, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			f, err := readFrame(c)
			if err != nil {
				return
			}
			if f.Header.Masked {
				ws.Cipher(f.Payload, f.Header.Mask, 0)
			}
			switch f.Header.OpCode {
			case ws.OpClose:
				_ = ws.WriteFrame(c, ws.NewCloseFrame(f.Payload))
				return
			case ws.OpText:
				if err := ws.WriteFrame(c, ws.NewTextFrame(f.Payload)); err != nil {
					return
				}
				if string(f.Payload) == "bye" {
					_ = ws.WriteFrame(c, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusInternalServerError, "")))
				}
			}
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// readFrame reads one frame of at most 64 KiB.
func readFrame(r io.Reader) (ws.Frame, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > 64<<10 {
		return ws.Frame{}, fmt.Errorf("frame of %d bytes", h.Length)
	}
	f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
	_, err = io.ReadFull(r, f.Payload)
	return f, err
}

// session is one client WebSocket through the node.
type session struct {
	conn net.Conn
	br   *bufio.Reader
}

func openSession(t testing.TB, proxy, key string) *session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, br, _, err := ws.Dialer{}.Dial(ctx, "ws://"+proxy+"/chat?session_id="+key)
	if err != nil {
		t.Fatalf("dial %s: %v", key, err)
	}
	s := &session{conn: c, br: br}
	if br == nil {
		s.br = bufio.NewReader(c)
	}
	return s
}

func (s *session) write(t testing.TB, f ws.Frame) {
	t.Helper()
	_ = s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteFrame(s.conn, ws.MaskFrameInPlace(f)); err != nil {
		t.Fatal(err)
	}
}

func (s *session) read(t testing.TB) ws.Frame {
	t.Helper()
	_ = s.conn.SetDeadline(time.Now().Add(10 * time.Second))
	f, err := readFrame(s.br)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// echo sends a text frame of payload and reads it back.
func (s *session) echo(t testing.TB, payload string) {
	t.Helper()
	s.write(t, ws.NewTextFrame([]byte(payload)))
	if f := s.read(t); string(f.Payload) != payload {
		t.Fatalf("echo = %q; want %q", f.Payload, payload)
	}
}

// closeByClient sends close code and waits for the backend's answer.
func (s *session) closeByClient(t testing.TB, code ws.StatusCode) {
	t.Helper()
	s.write(t, ws.NewCloseFrame(ws.NewCloseFrameBody(code, "")))
	if f := s.read(t); f.Header.OpCode != ws.OpClose {
		t.Fatalf("frame %v; want the close answer", f.Header.OpCode)
	}
	s.conn.Close()
}

// closeByBackend says "bye" and answers the backend's close.
func (s *session) closeByBackend(t testing.TB) {
	t.Helper()
	s.echo(t, "bye")
	f := s.read(t)
	if f.Header.OpCode != ws.OpClose {
		t.Fatalf("frame %v; want the backend's close", f.Header.OpCode)
	}
	s.write(t, ws.NewCloseFrame(f.Payload))
	s.conn.Close()
}

// metricValue is the value of name with exactly labels (name=value pairs).
func metricValue(t testing.TB, n *Node, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k {
			return l.GetValue() == v
		}
	}
	return false
}

// startTrafficNode runs one node in front of one backend, b1, with the
// access log in a file.
func startTrafficNode(t *testing.T) (*Node, string) {
	t.Helper()
	addr := trafficBackend(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	cfg := testConfig(t, "n0")
	cfg.Backends = []BackendSpec{{ID: "b1", Addr: addr}}
	cfg.AccessLog = logPath
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "b1 on the ring", func() (bool, string) {
		return n.Status().Ring.Backends == 1, "no ring yet"
	})
	return n, logPath
}

// accessLines reads the access log's lines of type typ.
func accessLines(t testing.TB, path, typ string) []accessRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []accessRecord
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r accessRecord
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// TestTrafficMetrics checks each traffic metric against a known
// workload: N handshakes, M client closes with 1000, K backend closes
// with 1011, known frame bytes, H plain requests.
func TestTrafficMetrics(t *testing.T) {
	const (
		clientCloses  = 30
		backendCloses = 10
		sessions      = clientCloses + backendCloses
		requests      = 5
		payload       = 100
	)
	n, logPath := startTrafficNode(t)
	msg := strings.Repeat("x", payload)
	var open []*session
	for i := range sessions {
		s := openSession(t, n.ProxyAddr(), fmt.Sprintf("m-%d", i))
		open = append(open, s)
	}
	waitFor(t, 5*time.Second, "sessions gauge", func() (bool, string) {
		v := metricValue(t, n, "meshlb_ws_sessions", "backend", "b1")
		return v == sessions, fmt.Sprintf("meshlb_ws_sessions = %v; want %d", v, sessions)
	})
	// The load summary carries them to /v1/mesh within its interval.
	waitFor(t, 3*summaryInterval, "mesh view", func() (bool, string) {
		v := n.MeshView()
		return v.Backends["b1"] == sessions, fmt.Sprintf("mesh view %v", v.Backends)
	})
	for i, s := range open {
		if i < clientCloses {
			s.echo(t, msg)
			s.closeByClient(t, ws.StatusNormalClosure)
		} else {
			// "bye" (3 bytes) instead of msg: echoed, then the backend closes.
			s.closeByBackend(t)
		}
	}
	for i := range requests {
		code, body := call(t, "GET", fmt.Sprintf("http://%s/page?session_id=h-%d", n.ProxyAddr(), i), "")
		if code != 200 || string(body) != "hello" {
			t.Fatalf("GET = %d %q", code, body)
		}
	}
	waitFor(t, 5*time.Second, "sessions closed", func() (bool, string) {
		v := metricValue(t, n, "meshlb_ws_closed_total", "backend", "b1", "code", "1000") +
			metricValue(t, n, "meshlb_ws_closed_total", "backend", "b1", "code", "1011")
		return v == sessions, fmt.Sprintf("closed = %v", v)
	})

	// Frame bytes: a masked client frame has 6 header bytes, a backend's 2.
	// Client → backend: the data frame and a close of 2 code bytes. Backend
	// → client: the echo and its close. Plain requests add their bodies.
	wantIn := clientCloses*(6+payload+8) + backendCloses*(6+3+8)
	wantOut := clientCloses*(2+payload+4) + backendCloses*(2+3+4) + requests*len("hello")
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"meshlb_ws_handshakes_total", []string{"backend", "b1", "result", "ok"}, sessions},
		{"meshlb_ws_handshake_seconds", nil, sessions},
		{"meshlb_ws_sessions", []string{"backend", "b1"}, 0},
		{"meshlb_ws_closed_total", []string{"backend", "b1", "code", "1000"}, clientCloses},
		{"meshlb_ws_closed_total", []string{"backend", "b1", "code", "1011"}, backendCloses},
		{"meshlb_http_requests_total", []string{"backend", "b1", "code_class", "2xx"}, requests},
		{"meshlb_http_request_seconds", nil, requests},
		{"meshlb_bytes_total", []string{"backend", "b1", "direction", "in"}, float64(wantIn)},
		{"meshlb_bytes_total", []string{"backend", "b1", "direction", "out"}, float64(wantOut)},
		{"meshlb_failovers_total", []string{"backend", "b1"}, 0},
	} {
		if got := metricValue(t, n, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v; want %v", c.name, c.labels, got, c.want)
		}
	}
	// An unroutable handshake: no backend is "none".
	if _, err := n.cluster.SetState("b1", 2); err != nil { // draining: off the ring
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "empty ring", func() (bool, string) { return n.Status().Ring.Backends == 0, "b1 still on the ring" })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, _, err := (ws.Dialer{}).Dial(ctx, "ws://"+n.ProxyAddr()+"/?session_id=x"); err == nil {
		t.Fatal("handshake with no backend succeeded")
	}
	if got := metricValue(t, n, "meshlb_ws_handshakes_total", "backend", "none", "result", "error"); got != 1 {
		t.Errorf("handshakes{none,error} = %v; want 1", got)
	}

	stopNode(n) // flushes the access log
	lines := accessLines(t, logPath, "ws")
	if len(lines) != sessions {
		t.Fatalf("%d ws lines; want %d", len(lines), sessions)
	}
	var byClient, byBackend int
	for _, l := range lines {
		switch {
		case l.ClosedBy == "client" && l.CloseCode == 1000 && l.BytesIn == 6+payload+8 && l.BytesOut == 2+payload+4:
			byClient++
		case l.ClosedBy == "backend" && l.CloseCode == 1011 && l.BytesIn == 6+3+8 && l.BytesOut == 2+3+4:
			byBackend++
		default:
			t.Errorf("unexpected ws line %+v", l)
		}
	}
	if byClient != clientCloses || byBackend != backendCloses {
		t.Errorf("closed by client %d, backend %d; want %d, %d", byClient, byBackend, clientCloses, backendCloses)
	}
	var plain, upgrades []accessRecord
	for _, l := range accessLines(t, logPath, "http") {
		if l.Upgrade {
			upgrades = append(upgrades, l)
		} else {
			plain = append(plain, l)
		}
	}
	if len(plain) != requests || plain[0].Status != 200 || plain[0].BytesOut != 5 || plain[0].Backend != "b1" {
		t.Errorf("http lines %+v; want %d of 200 with 5 bytes from b1", plain, requests)
	}
	// The refused upgrade has a line of its own; the sessions have none.
	if len(upgrades) != 1 || upgrades[0].Status != http.StatusServiceUnavailable || upgrades[0].Backend != "" {
		t.Errorf("upgrade lines %+v; want the one refused with 503", upgrades)
	}
}

// TestAccessLogSessions opens 1,000 sessions and finds exactly 1,000
// session lines with the right bytes and close codes, and none of the raw
// session IDs.
func TestAccessLogSessions(t *testing.T) {
	const sessions, workers, payload = 1000, 20, 64
	n, logPath := startTrafficNode(t)
	key := func(i int) string { return fmt.Sprintf("secret-%08x-%d", uint32(i*2654435761), i) }
	msg := strings.Repeat("y", payload)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < sessions; i += workers {
				s := openSession(t, n.ProxyAddr(), key(i))
				s.echo(t, msg)
				s.closeByClient(t, ws.StatusGoingAway)
			}
		})
	}
	wg.Wait()
	waitFor(t, 10*time.Second, "sessions ended", func() (bool, string) {
		v := metricValue(t, n, "meshlb_ws_closed_total", "backend", "b1", "code", "1001")
		return v == sessions, fmt.Sprintf("closed = %v", v)
	})
	stopNode(n)
	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := accessLines(t, logPath, "ws")
	if len(lines) != sessions {
		t.Fatalf("%d session lines; want %d", len(lines), sessions)
	}
	hashes := map[string]bool{}
	for _, l := range lines {
		if l.BytesIn != 6+payload+8 || l.BytesOut != 2+payload+4 || l.CloseCode != 1001 || l.ClosedBy != "client" ||
			l.Backend != "b1" || l.Node != "n0" || l.KeySource != "query:session_id" || l.Key != "" || len(l.KeyHash) != 16 {
			t.Fatalf("line %+v", l)
		}
		hashes[l.KeyHash] = true
	}
	if len(hashes) != sessions {
		t.Errorf("%d distinct key hashes; want %d", len(hashes), sessions)
	}
	for i := range sessions {
		if bytes.Contains(raw, []byte(key(i))) {
			t.Fatalf("the access log holds the raw session ID %q", key(i))
		}
	}
}
