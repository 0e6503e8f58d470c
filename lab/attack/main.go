//go:build linux

// Command attack is meshlb's attack campaign (make attack) and its soak
// (make soak). It owns a lab on loopback: meshlb nodes built from
// --meshlb, a `meshlb echo` backend and a hostile backend in this process
// (a raw TCP server that answers 101 without or with a wrong
// Sec-WebSocket-Accept, stops reading, streams 64 MB, counts smuggled
// requests), plus a small steady echo load through the node ("legit"
// traffic) whose round trips are timed.
//
// The campaign runs each class of hostile client, backend or peer
// (--classes; --list names them) about --tries times against node n0 and
// checks after each: n0 alive, its RSS at most baseline + 64 MB after the
// class and at its peak (plus, for a class that holds sessions open, the
// per-session bound of what they may hold: class.heldKiB), its threads and fds back to baseline ± 10 within 30 s, and the legit echo
// p99 during the class at most 2x the p99 of a window just before it (a
// control load straight to the echo backend is timed beside it, so a
// reader can tell a slow node from a busy machine).
// What the node answered is counted per class (status codes, closes,
// close codes) and compared with the answer the hardening issue expects;
// that comparison decides the exit status only with --strict.
//
//	go build -o bin/meshlb ./cmd/meshlb && go build -o bin/attack ./lab/attack
//	bin/attack --meshlb bin/meshlb --tries 1000 --strict
//	bin/attack --meshlb bin/meshlb --classes stall --stall-sessions 10000
//	bin/attack soak --meshlb bin/meshlb --minutes 60
//
// The soak (soak.go) keeps a steady WebSocket load on a 3-node mesh for
// --minutes while it kills and restarts the other nodes and the backends,
// and prints n0's RSS, goroutines, threads and fds every minute.
//
// Exit status: 0 every class passed, 1 one failed, 2 usage, 77 the lab
// can't run here. Every child runs in its own process group with
// Pdeathsig, and is killed on exit and on SIGINT/SIGTERM. All traffic
// stays on 127.0.0.0/8.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	exitFail  = 1
	exitUsage = 2
	exitSkip  = 77 // automake's SKIP: this machine can't run the lab
)

// errSkip marks a class or a lab that can't run here.
type errSkip struct{ reason string }

func (e errSkip) Error() string { return "skipped: " + e.reason }

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "soak" {
		return runSoak(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("attack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.meshlb, "meshlb", "bin/meshlb", "meshlb binary (build it first)")
	fs.IntVar(&o.tries, "tries", 1000, "tries per class")
	fs.IntVar(&o.stallSessions, "stall-sessions", 0, "sessions held stalled in both directions by the stall class (default --tries)")
	fs.IntVar(&o.nodes, "nodes", 3, "nodes in the mesh (n0 is attacked; 1 is enough but for gossip replays)")
	fs.StringVar(&o.classes, "classes", "", "comma-separated classes to run (default all; --list)")
	fs.BoolVar(&o.list, "list", false, "print the classes and exit")
	fs.BoolVar(&o.strict, "strict", false, "a class whose answers differ from the expected ones fails")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON on stdout")
	fs.DurationVar(&o.baseline, "baseline", 3*time.Second, "legit echo window before each class, for the p99 baseline")
	fs.DurationVar(&o.settle, "settle", 30*time.Second, "how long threads and fds may take to come back after a class")
	fs.DurationVar(&o.classTimeout, "class-timeout", 5*time.Minute, "bound on one class")
	fs.DurationVar(&o.hold, "hold", 3*time.Second, "how long held attacks (stalls, fd exhaustion, 64 MB) stay open")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", 2*time.Second, "the node's --handshake-timeout (slowloris waits past it)")
	fs.DurationVar(&o.p99Floor, "p99-floor", 5*time.Millisecond, "a legit p99 under this passes whatever the baseline (scheduler noise on a shared machine; 0: 2x baseline only)")
	fs.IntVar(&o.legitConns, "legit-conns", 16, "WebSockets of the legit echo load")
	fs.StringVar(&o.logs, "logs", "", "directory for the processes' logs (default: a new temporary directory, kept)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: attack [flags]     the attack campaign\n       attack soak [flags] the soak (attack soak --help)\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if o.list {
		for _, c := range classes {
			fmt.Fprintf(stdout, "%-14s %s\n", c.name, c.what)
		}
		return 0
	}
	if fs.NArg() > 0 || o.tries < 1 || o.nodes < 1 || o.legitConns < 1 || o.stallSessions < 0 {
		fmt.Fprintln(stderr, "attack: want positive --tries, --nodes, --legit-conns and no arguments")
		return exitUsage
	}
	if o.stallSessions == 0 {
		o.stallSessions = o.tries
	}
	sel, err := selectClasses(o.classes)
	if err != nil {
		fmt.Fprintf(stderr, "attack: %v\n", err)
		return exitUsage
	}
	if _, err := os.Stat(o.meshlb); err != nil {
		fmt.Fprintf(stderr, "attack: %v (build it: make build)\n", err)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// fds: the tool holds both ends of each stalled session (client and
	// hostile backend), and so does the node (client and backend); the
	// other classes hold at most about 2 x --tries at once.
	l, err := startLab(ctx, o, labSpec{nodes: o.nodes, hostile: true, nofile: 2*max(o.stallSessions, o.tries) + 512}, stderr)
	if err != nil {
		l.stop()
		var skip errSkip
		if errors.As(err, &skip) {
			fmt.Fprintf(stderr, "attack: %v\n", err)
			return exitSkip
		}
		fmt.Fprintf(stderr, "attack: %v\n", err)
		return exitFail
	}
	rep := campaign(ctx, l, o, sel, stderr)
	l.stop()
	rep.Logs = l.dir
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		printReport(stdout, rep)
	}
	switch {
	case ctx.Err() != nil:
		return exitFail
	case rep.Skipped == len(rep.Classes):
		return exitSkip
	case !rep.Pass:
		return exitFail
	}
	return 0
}

type options struct {
	meshlb           string
	tries            int
	stallSessions    int
	nodes            int
	classes          string
	list             bool
	strict           bool
	json             bool
	baseline         time.Duration
	settle           time.Duration
	classTimeout     time.Duration
	hold             time.Duration
	handshakeTimeout time.Duration
	p99Floor         time.Duration
	legitConns       int
	logs             string
}

func selectClasses(list string) ([]class, error) {
	if list == "" {
		return classes, nil
	}
	var out []class
	for name := range strings.SplitSeq(list, ",") {
		i := slices.IndexFunc(classes, func(c class) bool { return c.name == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown class %q (--list)", name)
		}
		out = append(out, classes[i])
	}
	return out, nil
}

// report is the campaign's result; --json prints it as is.
type report struct {
	Meshlb     string        `json:"meshlb"`
	Tries      int           `json:"tries"`
	Strict     bool          `json:"strict"`
	GOMAXPROCS int           `json:"gomaxprocs"`
	Classes    []classResult `json:"classes"`
	Skipped    int           `json:"skipped"`
	Pass       bool          `json:"pass"`
	Logs       string        `json:"logs"`
}

// classResult is one class: what it sent, what came back, and the checks.
type classResult struct {
	Name       string         `json:"name"`
	Tries      int            `json:"tries"`
	Outcomes   map[string]int `json:"outcomes"`
	Expected   string         `json:"expected,omitempty"` // the answer the issue asks for
	AsExpected int            `json:"as_expected"`        // tries that got it
	Unexpected int            `json:"unexpected"`         // tries that did not
	Base       usage          `json:"base"`
	Peak       usage          `json:"peak"`
	After      usage          `json:"after"`
	SettleSecs float64        `json:"settle_seconds"`
	P99BaseMs  float64        `json:"legit_p99_base_ms"`
	P99Ms      float64        `json:"legit_p99_ms"`
	// P99HeldMs is the legit p99 while a holding class (stall) held every
	// try open, after opening them: how the node serves others then.
	P99HeldMs float64 `json:"legit_p99_held_ms,omitempty"`
	// The control load goes straight to the echo backend from this
	// process: when its p99 rises as much, the machine (or this tool)
	// was busy, not the node slow.
	P99ControlBaseMs float64 `json:"control_p99_base_ms"`
	P99ControlMs     float64 `json:"control_p99_ms"`
	// P99ControlHeldMs is the control's p99 over the hold of P99HeldMs.
	P99ControlHeldMs float64 `json:"control_p99_held_ms,omitempty"`
	LegitMsgs        int     `json:"legit_msgs"`
	LegitErrs        int64   `json:"legit_errors"`
	LogKiB           int64   `json:"node_log_kib"`
	Seconds          float64 `json:"seconds"`
	Checks           []check `json:"checks"`
	Skipped          string  `json:"skipped,omitempty"`
	Err              string  `json:"error,omitempty"`
	Pass             bool    `json:"pass"`
}

type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func printReport(w io.Writer, r report) {
	fmt.Fprintf(w, "\nattack campaign: %s, --tries %d, strict %v, GOMAXPROCS %d, logs in %s\n\n", r.Meshlb, r.Tries, r.Strict, r.GOMAXPROCS, r.Logs)
	fmt.Fprintf(w, "%-13s %6s %-5s %-17s %-14s %-14s %-9s %-15s %-15s %s\n",
		"class", "tries", "pass", "RSS MB base/peak", "threads b/p/a", "fds b/p/a", "gor b/a", "p99 ms base/in", "direct b/in", "expected")
	for _, c := range r.Classes {
		if c.Skipped != "" {
			fmt.Fprintf(w, "%-13s %6s %-5s %s\n", c.Name, "-", "skip", c.Skipped)
			continue
		}
		exp := "-"
		if c.Expected != "" {
			exp = fmt.Sprintf("%d/%d %s", c.AsExpected, c.AsExpected+c.Unexpected, c.Expected)
		}
		pass := "ok"
		if !c.Pass {
			pass = "FAIL"
		}
		fmt.Fprintf(w, "%-13s %6d %-5s %-17s %-14s %-14s %-9s %-15s %-15s %s\n", c.Name, c.Tries, pass,
			fmt.Sprintf("%.0f/%.0f", mb(c.Base.RSSKiB), mb(c.Peak.RSSKiB)),
			fmt.Sprintf("%d/%d/%d", c.Base.Threads, c.Peak.Threads, c.After.Threads),
			fmt.Sprintf("%d/%d/%d", c.Base.FDs, c.Peak.FDs, c.After.FDs),
			fmt.Sprintf("%d/%d", c.Base.Goroutines, c.After.Goroutines),
			fmt.Sprintf("%.2f/%.2f", c.P99BaseMs, c.P99Ms), fmt.Sprintf("%.2f/%.2f", c.P99ControlBaseMs, c.P99ControlMs), exp)
	}
	fmt.Fprintln(w)
	for _, c := range r.Classes {
		if c.Skipped != "" {
			continue
		}
		fmt.Fprintf(w, "%s (%.1fs, node log +%d KiB, legit %d msgs %d errors):\n", c.Name, c.Seconds, c.LogKiB, c.LegitMsgs, c.LegitErrs)
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range c.Outcomes {
				if !yield(k) {
					return
				}
			}
		})
		for _, k := range keys {
			fmt.Fprintf(w, "    %6d  %s\n", c.Outcomes[k], k)
		}
		for _, ch := range c.Checks {
			if !ch.OK {
				fmt.Fprintf(w, "    FAIL %s: %s\n", ch.Name, ch.Detail)
			}
		}
		if c.Err != "" {
			fmt.Fprintf(w, "    error: %s\n", c.Err)
		}
	}
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n%s: %d classes, %d skipped\n", verdict, len(r.Classes), r.Skipped)
}

func mb(kib int64) float64 { return float64(kib) / 1024 }

// campaign runs the classes one after the other against n0.
func campaign(ctx context.Context, l *lab, o options, sel []class, stderr io.Writer) report {
	rep := report{Meshlb: o.meshlb, Tries: o.tries, Strict: o.strict, GOMAXPROCS: runtime.GOMAXPROCS(0), Pass: true}
	for _, c := range sel {
		if ctx.Err() != nil {
			break
		}
		fmt.Fprintf(stderr, "attack: %s ...\n", c.name)
		start := time.Now()
		r := runClass(ctx, l, o, c)
		fmt.Fprintf(stderr, "attack: %s done in %.1fs (pass %v)\n", c.name, time.Since(start).Seconds(), r.Pass)
		if r.Skipped != "" {
			rep.Skipped++
			fmt.Fprintf(stderr, "attack: %s skipped: %s\n", c.name, r.Skipped)
		} else if !r.Pass {
			rep.Pass = false
		}
		rep.Classes = append(rep.Classes, r)
		if !l.alive() {
			fmt.Fprintf(stderr, "attack: n0 died in %s; stopping (log %s)\n", c.name, l.nodes[0].logPath)
			break
		}
	}
	if len(rep.Classes) < len(sel) {
		rep.Pass = false
	}
	return rep
}

// runClass takes the baseline, runs one class under the legit load and
// checks what it left behind.
func runClass(ctx context.Context, l *lab, o options, c class) classResult {
	r := classResult{Name: c.name, Expected: c.expected}
	l.cleanup(ctx) // the previous class's leftovers out of the ring
	n0 := l.nodes[0]
	runtime.GC()
	time.Sleep(500 * time.Millisecond)
	r.Base = n0.usage()
	l.legit.reset()
	l.control.reset()
	sleepCtx(ctx, o.baseline)
	base := l.legit.take()
	r.P99ControlBaseMs = p99ms(l.control.take().rtts)
	r.P99BaseMs = p99ms(base.rtts)
	logBefore := n0.logSize()

	peak := startPeak(n0)
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, o.classTimeout)
	t := newTally()
	err := c.run(cctx, l, t)
	cancel()
	during := l.legit.take()
	if t.ramp != nil && t.held != nil {
		r.P99HeldMs = p99ms(t.held.rtts)
		during.rtts = append(append(t.ramp.rtts, t.held.rtts...), during.rtts...)
		during.errs += t.ramp.errs + t.held.errs
	}
	control := l.control.take()
	if t.heldControl != nil {
		r.P99ControlHeldMs = p99ms(t.heldControl.rtts)
		control.rtts = append(append(control.rtts, t.rampControl.rtts...), t.heldControl.rtts...)
	}
	r.P99ControlMs = p99ms(control.rtts)
	r.Seconds = time.Since(start).Seconds()
	r.Peak = peak.stop()
	r.Tries = t.tries()
	r.Outcomes = t.counts()
	r.AsExpected, r.Unexpected = t.expected()
	r.P99Ms = p99ms(during.rtts)
	r.LegitMsgs = len(during.rtts)
	r.LegitErrs = during.errs
	var skip errSkip
	if errors.As(err, &skip) {
		r.Skipped = skip.reason
		r.Pass = true
		return r
	}
	if err != nil {
		r.Err = err.Error()
	}

	// Back to baseline: threads and fds at most 10 above it, within
	// --settle. Below it is no leak: a previous class's idle backend
	// connections may have timed out meanwhile.
	settleStart := time.Now()
	for {
		r.After = n0.usage()
		if (r.After.Threads <= r.Base.Threads+10 && r.After.FDs <= r.Base.FDs+10) || time.Since(settleStart) > o.settle || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	r.SettleSecs = time.Since(settleStart).Seconds()
	r.LogKiB = (n0.logSize() - logBefore) / 1024
	if l.stuck > 0 {
		r.Outcomes["backends left in the ring that the admin API can't remove (so far)"] = l.stuck
	}
	alive := l.alive()
	r.Checks = append(r.Checks,
		check{"alive", alive, fmt.Sprintf("n0 /healthz after the class: %v", alive)},
		check{"rss", r.Peak.RSSKiB <= r.Base.RSSKiB+64<<10+c.heldKiB*int64(t.tries()) && r.After.RSSKiB <= r.Base.RSSKiB+64<<10,
			fmt.Sprintf("base %.1f MB, peak %.1f MB, after %.1f MB; limit base + 64 MB after, and at the peak%s", mb(r.Base.RSSKiB), mb(r.Peak.RSSKiB), mb(r.After.RSSKiB), heldLimit(c, t.tries()))},
		check{"threads", r.After.Threads <= r.Base.Threads+10,
			fmt.Sprintf("base %d, peak %d, after %d (%.1fs); want at most base + 10 within %v", r.Base.Threads, r.Peak.Threads, r.After.Threads, r.SettleSecs, o.settle)},
		check{"fds", r.After.FDs <= r.Base.FDs+10,
			fmt.Sprintf("base %d, peak %d, after %d (%.1fs); want at most base + 10 within %v", r.Base.FDs, r.Peak.FDs, r.After.FDs, r.SettleSecs, o.settle)},
		p99Check(r.P99BaseMs, r.P99Ms, len(during.rtts), o.p99Floor),
	)
	if t.held != nil {
		c := p99Check(r.P99BaseMs, r.P99HeldMs, len(t.held.rtts), o.p99Floor)
		c.Name, c.Detail = "legit-p99-held", "while every session was held: "+c.Detail+
			fmt.Sprintf("; the control (straight to the echo backend) meanwhile %.2f ms vs %.2f ms before", r.P99ControlHeldMs, r.P99ControlBaseMs)
		r.Checks = append(r.Checks, c)
	}
	if c.maxThreads {
		limit := runtime.GOMAXPROCS(0) + 16
		r.Checks = append(r.Checks, check{"peak-threads", r.Peak.Threads <= limit,
			fmt.Sprintf("peak %d with %d sessions held; want <= GOMAXPROCS + 16 = %d", r.Peak.Threads, t.tries(), limit)})
	}
	if c.expected != "" {
		r.Checks = append(r.Checks, check{"expected", r.Unexpected == 0 || !o.strict,
			fmt.Sprintf("%d of %d tries got %q (counts with --strict: %v)", r.AsExpected, r.AsExpected+r.Unexpected, c.expected, o.strict)})
	}
	if r.Err != "" {
		r.Checks = append(r.Checks, check{"ran", false, r.Err})
	}
	r.Pass = true
	for _, ch := range r.Checks {
		r.Pass = r.Pass && ch.OK
	}
	return r
}

// minRTTs is the fewest legit round trips in a class that make a p99:
// a class over in a few milliseconds (small --tries) is not measured.
const minRTTs = 200

func p99Check(base, during float64, n int, floor time.Duration) check {
	limit := max(2*base, float64(floor)/float64(time.Millisecond))
	if n < minRTTs {
		return check{"legit-p99", true, fmt.Sprintf("not measured: %d round trips during the class (< %d)", n, minRTTs)}
	}
	ok := during <= limit
	return check{"legit-p99", ok, fmt.Sprintf("%.2f ms during (%d round trips) vs %.2f ms before; limit max(2x, %v) = %.2f ms", during, n, base, floor, limit)}
}

func near(a, b, d int) bool { return a >= b-d && a <= b+d }

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// heldLimit describes the peak's allowance of a class that holds its
// tries open (class.heldKiB).
func heldLimit(c class, tries int) string {
	if c.heldKiB == 0 {
		return ""
	}
	return fmt.Sprintf(" + %d KiB × %d held = %.1f MB", c.heldKiB, tries, mb(c.heldKiB*int64(tries)))
}
