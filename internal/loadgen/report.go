package loadgen

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// maxMovesReported bounds the moves listed one by one in a report.
const maxMovesReported = 1000

// Move kinds.
const (
	// MoveMisroute: the backend set did not change near the move.
	MoveMisroute = "misroute"
	// MoveSetChanged: the backend set changed within MoveWindow of it.
	MoveSetChanged = "set_changed"
)

// Move is one session meeting another backend than before.
type Move struct {
	Session string    `json:"session"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	At      time.Time `json:"at"` // first answer from To
	Kind    string    `json:"kind"`
}

// Report is what a run found. Its JSON field names are stable: scripts
// and chaos tests read them (README, "Load and chaos checking").
type Report struct {
	Seed            uint64  `json:"seed"`
	DurationSeconds float64 `json:"duration_s"`

	Sessions         int `json:"sessions"`          // opened (the ramp may end early)
	SessionsAnswered int `json:"sessions_answered"` // got at least one whoami answer
	SessionsMoved    int `json:"sessions_moved"`    // met more than one backend

	ConnectAttempts int64 `json:"connect_attempts"`
	Connects        int64 `json:"connects"`
	Reconnects      int64 `json:"reconnects"` // connects after a session's first
	Whoamis         int64 `json:"whoami_answers"`
	Echoes          int64 `json:"echo_answers"`

	Misroutes        int    `json:"misroutes"`
	MovedSetChanged  int    `json:"moved_set_changed"`
	Moves            []Move `json:"moves"` // the first 1000
	BackendSetKnown  bool   `json:"backend_set_known"`
	BackendSetChange int    `json:"backend_set_changes"`
	// BackendSets: the first set polled and each change (the first 100).
	BackendSets     []BackendSet `json:"backend_sets"`
	AdminPolls      int64        `json:"admin_polls"`
	AdminPollErrors int64        `json:"admin_poll_errors"`
	AdminLastError  string       `json:"admin_last_error,omitempty"`

	// Backends: how many sessions were last on each backend.
	Backends map[string]int `json:"backends"`

	// Disconnects: connections ended by the other side, by kind:
	// close_NNNN (close frame with code NNNN: 1001 going away, 1012
	// service restart, 1014 bad gateway, ...), reset, eof, other.
	Disconnects map[string]int64 `json:"disconnects"`
	// CloseCodes and Resets repeat the close_NNNN and reset counts.
	CloseCodes map[string]int64 `json:"close_codes"`
	Resets     int64            `json:"resets"`

	Handshake Latency `json:"handshake"`
	Echo      Latency `json:"echo"`

	// Errors: failed operations by kind. Operations are connect attempts,
	// whoami and echo answers, and failed requests.
	Errors     map[string]int64 `json:"errors"`
	Operations int64            `json:"operations"`
	ErrorRate  float64          `json:"error_rate"`

	SourceIPs []string `json:"source_ips,omitempty"`

	// Verdict is "pass" or "fail", set by Judge; Reasons say why it failed.
	Verdict      string   `json:"verdict"`
	MaxErrorRate float64  `json:"max_error_rate"`
	Reasons      []string `json:"reasons"`
}

func (b *Bench) report(start time.Time, elapsed time.Duration, sessions []*session) *Report {
	changes, history, polls, pollErrs, lastErr, known := b.watch.snapshot()
	st := b.st
	st.mu.Lock()
	defer st.mu.Unlock()
	r := &Report{
		Seed:             b.cfg.Seed,
		DurationSeconds:  math.Round(elapsed.Seconds()*1000) / 1000,
		Sessions:         len(sessions),
		ConnectAttempts:  st.connectAttempts,
		Connects:         st.connects,
		Reconnects:       st.reconnects,
		Whoamis:          st.whoamis,
		Echoes:           st.echoes,
		Moves:            []Move{},
		BackendSetKnown:  known,
		BackendSetChange: len(changes),
		BackendSets:      history,
		AdminPolls:       polls,
		AdminPollErrors:  pollErrs,
		AdminLastError:   lastErr,
		Backends:         map[string]int{},
		Disconnects:      maps.Clone(st.disconnects),
		CloseCodes:       map[string]int64{},
		Handshake:        st.hsLat.summary(),
		Echo:             st.echoLat.summary(),
		Errors:           maps.Clone(st.errors),
		Reasons:          []string{},
	}
	if r.BackendSets == nil {
		r.BackendSets = []BackendSet{}
	}
	for k, n := range r.Disconnects {
		if code, ok := strings.CutPrefix(k, "close_"); ok {
			r.CloseCodes[code] = n
		}
	}
	r.Resets = r.Disconnects["reset"]
	var failed int64
	for _, n := range r.Errors {
		failed += n
	}
	// Connect failures are in connectAttempts already; other failures are
	// operations of their own.
	r.Operations = st.connectAttempts + st.whoamis + st.echoes + st.failedOps
	if r.Operations > 0 {
		r.ErrorRate = float64(failed) / float64(r.Operations)
	}
	for _, s := range sessions {
		if s == nil {
			continue
		}
		if s.last != "" {
			r.SessionsAnswered++
			r.Backends[s.last]++
		}
		if len(s.moves) > 0 {
			r.SessionsMoved++
		}
		for _, m := range s.moves {
			kind := MoveMisroute
			// A connection keeps the backend chosen when it was opened,
			// whatever the ring does meanwhile: a set change while the old
			// connection was open (a backend back from the dead, say)
			// explains a move at the next reconnect, however much later.
			if changedNear(changes, m.oldConn, m.firstNew, b.cfg.MoveWindow) {
				kind = MoveSetChanged
			}
			if kind == MoveMisroute {
				r.Misroutes++
			} else {
				r.MovedSetChanged++
			}
			if len(r.Moves) < maxMovesReported {
				r.Moves = append(r.Moves, Move{Session: s.id, From: m.from, To: m.to, At: m.firstNew.UTC(), Kind: kind})
			}
		}
	}
	slices.SortFunc(r.Moves, func(a, b Move) int { return a.At.Compare(b.At) })
	for _, a := range b.sources {
		r.SourceIPs = append(r.SourceIPs, a.String())
	}
	return r
}

// Judge sets the verdict: pass when no session was misrouted, at least one
// session got an answer, and the error rate is at most maxErrorRate.
func (r *Report) Judge(maxErrorRate float64) bool {
	r.MaxErrorRate = maxErrorRate
	r.Reasons = []string{}
	if r.Misroutes > 0 {
		r.Reasons = append(r.Reasons, fmt.Sprintf("%d misroutes", r.Misroutes))
	}
	if r.SessionsAnswered == 0 {
		r.Reasons = append(r.Reasons, "no session got an answer")
	}
	if r.ErrorRate > maxErrorRate {
		r.Reasons = append(r.Reasons, fmt.Sprintf("error rate %.2f%% above %.2f%%", 100*r.ErrorRate, 100*maxErrorRate))
	}
	r.Verdict = "pass"
	if len(r.Reasons) > 0 {
		r.Verdict = "fail"
	}
	return r.Verdict == "pass"
}

// WriteSummary prints the report as a table for a person.
func (r *Report) WriteSummary(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }
	p("sessions\t%d opened, %d answered, %d met more than one backend\n", r.Sessions, r.SessionsAnswered, r.SessionsMoved)
	p("connects\t%d attempts, %d connected, %d reconnects\n", r.ConnectAttempts, r.Connects, r.Reconnects)
	p("answers\t%d whoami, %d echo\n", r.Whoamis, r.Echoes)
	p("backends\t%s\n", joinCounts(r.Backends))
	set := fmt.Sprintf("%d changes seen in %d polls (%d failed)", r.BackendSetChange, r.AdminPolls, r.AdminPollErrors)
	if !r.BackendSetKnown {
		set = "UNKNOWN (no admin API answered): every move counts as a misroute"
		if r.AdminPolls == 0 {
			set = "UNKNOWN (no admin API given): every move counts as a misroute"
		}
		if r.AdminLastError != "" {
			set += "; last error: " + r.AdminLastError
		}
	}
	p("backend set\t%s\n", set)
	p("moves\t%d misroutes, %d moved (backend set changed)\n", r.Misroutes, r.MovedSetChanged)
	disc := joinCounts(r.Disconnects)
	p("disconnects\t%s\n", disc)
	p("\n")
	p("latency\tp50\tp90\tp99\tmax\tcount\n")
	for _, l := range []struct {
		name string
		l    Latency
	}{{"handshake", r.Handshake}, {"echo", r.Echo}} {
		p("%s\t%s\t%s\t%s\t%s\t%d\n", l.name, ms(l.l.P50), ms(l.l.P90), ms(l.l.P99), ms(l.l.Max), l.l.Count)
	}
	p("\n")
	p("errors\t%d of %d operations (%.3f%%)\n", sum(r.Errors), r.Operations, 100*r.ErrorRate)
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		p("  %s\t%d\n", k, r.Errors[k])
	}
	if len(r.Moves) > 0 {
		p("\n")
		p("first moves\tfrom\tto\tkind\n")
		for _, m := range r.Moves[:min(len(r.Moves), 10)] {
			p("  %s\t%s\t%s\t%s\n", m.Session, m.From, m.To, m.Kind)
		}
	}
	p("\n")
	if r.Verdict == "pass" {
		p("verdict\tPASS (0 misroutes, error rate %.3f%% <= %.3f%%)\n", 100*r.ErrorRate, 100*r.MaxErrorRate)
	} else {
		p("verdict\tFAIL: %s\n", strings.Join(r.Reasons, "; "))
	}
	return tw.Flush()
}

func ms(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "ms" }

func sum[V int | int64](m map[string]V) V {
	var t V
	for _, v := range m {
		t += v
	}
	return t
}

func joinCounts[V int | int64](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
