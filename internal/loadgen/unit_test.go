package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.add(time.Duration(i) * 100 * time.Microsecond) // 0.1 ms .. 1 s
	}
	for _, tc := range []struct {
		q    float64
		want float64 // ms
	}{{0.5, 500}, {0.9, 900}, {0.99, 990}, {1, 1000}} {
		got := float64(h.quantile(tc.q)) / 1000
		if got < tc.want || got > tc.want*1.02 {
			t.Errorf("q%.2f = %.3f ms; want %.0f ms within +2%%", tc.q, got, tc.want)
		}
	}
	if s := h.summary(); s.Max != 1000 || s.Count != 10000 {
		t.Errorf("summary = %+v; want max 1000 ms, count 10000", s)
	}
	var empty histogram
	if s := empty.summary(); s != (Latency{}) {
		t.Errorf("empty summary = %+v", s)
	}
	// Every bucket's upper bound maps back to the bucket.
	for _, us := range []int64{0, 1, 127, 128, 129, 1000, 1 << 20, 1<<40 + 12345, 1<<62 + 1} {
		if i := bucketOf(us); upperOf(i) < us || bucketOf(upperOf(i)) != i {
			t.Errorf("value %d: bucket %d, upper %d", us, i, upperOf(i))
		}
	}
}

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lo, hi := 100*time.Millisecond, 2*time.Second
	for n, want := range []time.Duration{0, 100, 200, 400, 800, 1600, 2000, 2000} {
		if n == 0 {
			continue
		}
		want *= time.Millisecond
		for range 50 {
			if d := backoff(n, lo, hi, rng); d < want/2 || d > want {
				t.Fatalf("attempt %d: %v; want in [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

func TestParseSourceIPs(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "127.0.0.2-127.0.0.4", want: []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}},
		{in: "127.0.0.9, 127.0.1.1-127.0.1.2", want: []string{"127.0.0.9", "127.0.1.1", "127.0.1.2"}},
		{in: "::1", want: []string{"::1"}},
		{in: "127.0.0.4-127.0.0.2", wantErr: true},
		{in: "10.0.0.0-10.2.0.0", wantErr: true},
		{in: "nope", wantErr: true},
		{in: "", wantErr: true},
	} {
		got, err := ParseSourceIPs(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err = %v; want error %v", tc.in, err, tc.wantErr)
			continue
		}
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if !slices.Equal(s, tc.want) {
			t.Errorf("%q = %v; want %v", tc.in, s, tc.want)
		}
	}
}

func TestAutoSourceIPs(t *testing.T) {
	loop := []string{"127.0.0.1:8080", "127.0.0.1:8081"}
	if got := AutoSourceIPs(loop, 1000); got != nil {
		t.Errorf("1000 sessions: %v; want none (the kernel copes)", got)
	}
	got := AutoSourceIPs(loop, 10000)
	if len(got) != 3 || got[0] != netip.MustParseAddr("127.0.0.1") || got[2] != netip.MustParseAddr("127.0.0.3") {
		t.Errorf("10000 sessions on loopback: %v; want 127.0.0.1-127.0.0.3", got)
	}
	if got := AutoSourceIPs([]string{"127.0.0.1:1", "192.0.2.7:1"}, 10000); got != nil {
		t.Errorf("a non-loopback node: %v; want none", got)
	}
}

func TestTargetsRotateAvoidLastAndCoolDown(t *testing.T) {
	tg := newTargets([]string{"a:1", "b:1", "c:1"}, "", nil, time.Minute)
	ctx := context.Background()
	var got []string
	for range 6 {
		a, err := tg.pick(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	if want := []string{"a:1", "b:1", "c:1", "a:1", "b:1", "c:1"}; !slices.Equal(got, want) {
		t.Fatalf("rotation = %v; want %v", got, want)
	}
	for range 10 {
		if a, _ := tg.pick(ctx, "b:1"); a == "b:1" {
			t.Fatal("picked the node the session just left")
		}
	}
	tg.failed("a:1")
	for range 10 {
		if a, _ := tg.pick(ctx, "c:1"); a != "b:1" {
			t.Fatalf("picked %s; want b:1 (a:1 cooling down, c:1 just left)", a)
		}
	}
	// With every other node down, the one just left is still better
	// than nothing.
	one := newTargets([]string{"a:1"}, "", nil, time.Minute)
	one.failed("a:1")
	if a, err := one.pick(ctx, "a:1"); err != nil || a != "a:1" {
		t.Fatalf("single node = %q, %v", a, err)
	}
	none := newTargets(nil, "", nil, time.Minute)
	if _, err := none.pick(ctx, ""); err == nil || kindOfResolveErr(err) != "no_nodes" {
		t.Fatalf("no nodes: %v", err)
	}
}

// A crowd asking at once makes one DNS lookup, and a lookup that fails
// keeps the last answer.
func TestTargetsResolveOnceForACrowd(t *testing.T) {
	var lookups atomic.Int32
	fail := atomic.Bool{}
	tg := newTargets(nil, "mesh.test:8080", nil, time.Second)
	tg.lookup = func(ctx context.Context, host string) ([]string, error) {
		lookups.Add(1)
		time.Sleep(50 * time.Millisecond)
		if fail.Load() {
			return nil, errors.New("resolver down")
		}
		return []string{"192.0.2.2", "192.0.2.1"}, nil
	}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			got, err := tg.list(context.Background())
			if err != nil || !slices.Equal(got, []string{"192.0.2.1:8080", "192.0.2.2:8080"}) {
				t.Errorf("list = %v, %v", got, err)
			}
		})
	}
	wg.Wait()
	if n := lookups.Load(); n != 1 {
		t.Fatalf("%d lookups for 100 callers; want 1", n)
	}
	fail.Store(true)
	tg.now = func() time.Time { return time.Now().Add(time.Hour) } // the answer has expired
	got, err := tg.list(context.Background())
	if err == nil || len(got) != 2 {
		t.Fatalf("after a failed lookup: %v, %v; want the old answer and the error", got, err)
	}
}

func TestSessionRecordsMoves(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := &session{id: "x"}
	s.met("web-1", t0)
	s.met("web-1", t0.Add(time.Second))
	s.met("web-2", t0.Add(3*time.Second))
	s.met("web-1", t0.Add(4*time.Second))
	if !slices.Equal(s.backends, []string{"web-1", "web-2"}) || len(s.moves) != 2 {
		t.Fatalf("backends %v, moves %+v", s.backends, s.moves)
	}
	if m := s.moves[0]; m.from != "web-1" || m.to != "web-2" || !m.lastOld.Equal(t0.Add(time.Second)) || !m.firstNew.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("first move %+v", m)
	}
}

// A connection keeps its backend while the ring changes under it: a move at
// the next reconnect is judged against set changes since that connection
// was dialled, not only those near the move.
func TestMoveJudgedFromTheOldConnection(t *testing.T) {
	t0 := time.Unix(1000, 0)
	changes := []time.Time{t0.Add(10 * time.Second)} // e.g. a backend back in the ring
	w := 5 * time.Second
	for _, tc := range []struct {
		name   string
		dialAt time.Duration // of the connection that reached web-1
		want   bool          // set_changed
	}{
		{"set changed while connected", 0, true},
		{"connected after the change", 20 * time.Second, false},
	} {
		s := &session{id: "x"}
		s.connAt = t0.Add(tc.dialAt)
		s.met("web-1", t0.Add(tc.dialAt+time.Second))
		s.met("web-1", t0.Add(30*time.Second))
		s.connAt = t0.Add(31 * time.Second)
		s.met("web-2", t0.Add(31*time.Second))
		if len(s.moves) != 1 || !s.moves[0].oldConn.Equal(t0.Add(tc.dialAt)) {
			t.Fatalf("%s: moves %+v", tc.name, s.moves)
		}
		m := s.moves[0]
		if got := changedNear(changes, m.oldConn, m.firstNew, w); got != tc.want {
			t.Errorf("%s: blamed on the set change %v; want %v", tc.name, got, tc.want)
		}
	}
}

func TestChangedNear(t *testing.T) {
	t0 := time.Unix(1000, 0)
	changes := []time.Time{t0}
	w := 2 * time.Second
	for _, tc := range []struct {
		from, to time.Duration // relative to t0
		want     bool
	}{
		{-10 * time.Second, -5 * time.Second, false},
		{-5 * time.Second, -2 * time.Second, true}, // change 2 s after the move: window
		{-1 * time.Second, time.Second, true},
		{2 * time.Second, 3 * time.Second, true},
		{3 * time.Second, 4 * time.Second, false},
	} {
		if got := changedNear(changes, t0.Add(tc.from), t0.Add(tc.to), w); got != tc.want {
			t.Errorf("move [%v, %v]: %v; want %v", tc.from, tc.to, got, tc.want)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no nodes", Config{}, "no nodes"},
		{"bad node", Config{Nodes: []string{"nohost"}}, "nohost"},
		{"bad target", Config{Target: "x:0"}, "port"},
		{"bad admin", Config{Nodes: []string{"a:1"}, Admin: []string{"a"}}, "admin"},
		{"bad path", Config{Nodes: []string{"a:1"}, Path: "ws"}, "path"},
		{"backoff", Config{Nodes: []string{"a:1"}, BackoffMin: time.Minute, BackoffMax: time.Second}, "backoff"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v; want one naming %q", tc.name, err, tc.want)
		}
	}
}

// The JSON field names are a documented contract (README): renaming one
// breaks users' scripts.
func TestReportJSONFieldsAreStable(t *testing.T) {
	r := &Report{}
	r.Judge(0.01)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"seed", "duration_s", "sessions", "sessions_answered", "sessions_moved",
		"connect_attempts", "connects", "reconnects", "whoami_answers", "echo_answers",
		"misroutes", "moved_set_changed", "moves", "backend_set_known", "backend_set_changes", "backend_sets",
		"admin_polls", "admin_poll_errors", "backends", "disconnects", "close_codes", "resets",
		"handshake", "echo", "errors", "operations", "error_rate", "verdict", "max_error_rate", "reasons"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report JSON lacks %q", k)
		}
	}
	for _, k := range []string{"count", "p50_ms", "p90_ms", "p99_ms", "max_ms"} {
		if _, ok := m["echo"].(map[string]any)[k]; !ok {
			t.Errorf("latency JSON lacks %q", k)
		}
	}
	if m["verdict"] != "fail" {
		t.Errorf("an empty run's verdict = %v; want fail (no session answered)", m["verdict"])
	}
}
