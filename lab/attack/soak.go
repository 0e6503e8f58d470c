//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// soakSample is one minute of the soak: n0's figures and the load's.
type soakSample struct {
	Minute int      `json:"minute"`
	usage           // n0 at the end of the minute
	Msgs   int      `json:"msgs"`
	Errors int64    `json:"errors"` // load connections that failed (chaos makes some)
	P99Ms  float64  `json:"p99_ms"`
	Events []string `json:"events"`
}

type soakReport struct {
	Minutes       int          `json:"minutes"`
	WarmupMinutes int          `json:"warmup_minutes"`
	Sessions      int          `json:"sessions"`
	Samples       []soakSample `json:"samples"`
	Checks        []check      `json:"checks"`
	Pass          bool         `json:"pass"`
	Logs          string       `json:"logs"`
}

// runSoak is `attack soak`: --sessions WebSockets through n0 of a 3-node
// mesh over 3 echo backends for --minutes, with a chaos event every
// --chaos-every (kill -9 of n1 or n2, SIGTERM of one, kill -9 of a
// backend; each restarted on its addresses 3 s later). n0 is never
// touched: its figures are the soak's. It passes when n0's RSS over the
// last 5 minutes (median) is within 5 % of its median over the 5 minutes
// from --warmup-minutes (by default the minute after the first full cycle
// of chaos events) and its goroutines, threads and fds are flat (within
// 10, goroutines within 10 or 2 %).
func runSoak(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("attack soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.meshlb, "meshlb", "bin/meshlb", "meshlb binary (build it first)")
	minutes := fs.Int("minutes", 60, "length of the run in minutes (SOAK_MINUTES)")
	sessions := fs.Int("sessions", 200, "WebSocket sessions of the steady load")
	pace := fs.Duration("pace", 100*time.Millisecond, "time between two messages of a session")
	every := fs.Duration("chaos-every", 40*time.Second, "time between chaos events")
	warmup := fs.Int("warmup-minutes", 0, "the minute whose figures the end is compared with (at most --minutes - 1; default: the minute after the first full cycle of chaos events)")
	jsonOut := fs.Bool("json", false, "print the report as JSON on stdout")
	fs.StringVar(&o.logs, "logs", "", "directory for the processes' logs (default: a new temporary directory, kept)")
	if v := os.Getenv("SOAK_MINUTES"); v != "" {
		if err := fs.Set("minutes", v); err != nil {
			fmt.Fprintf(stderr, "attack soak: SOAK_MINUTES=%q: %v\n", v, err)
			return exitUsage
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 || *minutes < 2 || *sessions < 1 || *every < time.Second {
		fmt.Fprintln(stderr, "attack soak: want --minutes >= 2, --sessions >= 1, --chaos-every >= 1s and no arguments")
		return exitUsage
	}
	if *warmup == 0 {
		// Every kind of event on every node and backend, once: each runs
		// code paths for the first time (drain, failover, a node's
		// return), and the pages they touch stay in RSS.
		*warmup = int((chaosCycle*(*every)+time.Minute-1)/time.Minute) + 1
	}
	o.handshakeTimeout = 10 * time.Second
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	l, err := startLab(ctx, o, labSpec{nodes: 3, echoes: 3, nofile: 4**sessions + 4096, soak: true}, stderr)
	if err == nil {
		n0 := l.nodes[0].proxy
		l.legit, err = startLegit(ctx, func(i int) string { return "ws://" + n0 + "/soak?session_id=soak-" + strconv.Itoa(i) }, *sessions, *pace)
	}
	if err != nil {
		l.stop()
		fmt.Fprintf(stderr, "attack soak: %v\n", err)
		var skip errSkip
		if errors.As(err, &skip) {
			return exitSkip
		}
		return exitFail
	}
	table := stdout // the minutes as they pass; with --json, beside the log lines
	if *jsonOut {
		table = stderr
	}
	rep := soak(ctx, l, *minutes, min(*warmup, *minutes-1), *every, table)
	rep.Sessions = *sessions
	l.stop()
	rep.Logs = l.dir
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		for _, c := range rep.Checks {
			ok := "ok  "
			if !c.OK {
				ok = "FAIL"
			}
			fmt.Fprintf(stdout, "%s %-10s %s\n", ok, c.Name, c.Detail)
		}
		verdict := "PASS"
		if !rep.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(stdout, "%s: %d minutes, %d sessions, logs in %s\n", verdict, len(rep.Samples), rep.Sessions, rep.Logs)
	}
	if ctx.Err() != nil || !rep.Pass {
		return exitFail
	}
	return 0
}

func soak(ctx context.Context, l *lab, minutes, warmup int, every time.Duration, w io.Writer) soakReport {
	rep := soakReport{Minutes: minutes, WarmupMinutes: warmup}
	l.legit.reset()
	start := time.Now()
	nextChaos := start.Add(every / 2)
	var events []string
	event := 0
	fmt.Fprintf(w, "%-6s %8s %8s %8s %8s %10s %8s %6s %8s %7s %8s  %s\n", "minute", "RSS MB", "anon MB", "file MB", "heap MB", "goroutines", "threads", "fds", "msgs", "errors", "p99 ms", "chaos")
	for m := 1; m <= minutes && ctx.Err() == nil; m++ {
		end := start.Add(time.Duration(m) * time.Minute)
		for time.Now().Before(end) && ctx.Err() == nil {
			if time.Now().After(nextChaos) && time.Until(end) > 10*time.Second {
				events = append(events, l.chaos(ctx, event))
				event++
				nextChaos = time.Now().Add(every)
			}
			sleepCtx(ctx, min(time.Until(end), time.Second))
		}
		win := l.legit.take()
		s := soakSample{Minute: m, usage: l.nodes[0].usage(), Msgs: len(win.rtts), Errors: win.errs, P99Ms: p99ms(win.rtts), Events: events}
		events = nil
		rep.Samples = append(rep.Samples, s)
		fmt.Fprintf(w, "%-6d %8.1f %8.1f %8.1f %8.1f %10d %8d %6d %8d %7d %8.2f  %v\n", m, mb(s.RSSKiB), mb(s.AnonKiB), mb(s.FileKiB), mb(s.HeapKiB), s.Goroutines, s.Threads, s.FDs, s.Msgs, s.Errors, s.P99Ms, s.Events)
		if m == max(warmup, 1) || m == minutes {
			l.saveHeap(m)
		}
	}
	if len(rep.Samples) < 2 {
		rep.Checks = append(rep.Checks, check{"ran", false, "fewer than 2 minutes"})
		return rep
	}
	// The first minutes warm up: code paged in, heap and stacks grown to
	// the first kill of each kind. (The node's parked goroutines, acceptor
	// servers and relay workers, grow with each kill's burst too, but go
	// again within two trim periods: internal/parkpool.) Compare the end
	// with the figures at --warmup-minutes.
	if len(rep.Samples) <= warmup {
		rep.Checks = append(rep.Checks, check{"ran", false, fmt.Sprintf("%d minutes, not past the %d of warm-up", len(rep.Samples), warmup)})
		return rep
	}
	a, b := rep.Samples[max(warmup, 1)-1], rep.Samples[len(rep.Samples)-1]
	// RSS is compared as the median of up to 5 minutes at each end: one
	// sample swings by a megabyte with where the collector is in its
	// cycle (a 4-6 MB heap with GOGC 100), which is 5 % of the whole.
	after := rep.Samples[max(warmup, 1)-1:]
	k := min(5, len(after)/2)
	ra, rb := medianRSS(after[:k]), medianRSS(after[len(after)-k:])
	growth := float64(rb-ra) / float64(ra) * 100
	gTol := max(10, a.Goroutines/50)
	alive := l.alive()
	rep.Checks = append(rep.Checks,
		check{"alive", alive, fmt.Sprintf("n0 /healthz at the end: %v", alive)},
		check{"rss", growth <= 5, fmt.Sprintf("median %.1f MB over minutes %d-%d, %.1f MB over minutes %d-%d: %+.1f %% (limit +5 %%); trend %+.2f MB/h; one sample each: %.1f MB at minute %d, %.1f at %d",
			mb(ra), after[0].Minute, after[k-1].Minute, mb(rb), after[len(after)-k].Minute, b.Minute, growth, rssTrend(after), mb(a.RSSKiB), a.Minute, mb(b.RSSKiB), b.Minute)},
		check{"goroutines", near(b.Goroutines, a.Goroutines, gTol), fmt.Sprintf("%d at minute %d, then %d (flat: ± %d)", a.Goroutines, a.Minute, b.Goroutines, gTol)},
		check{"threads", near(b.Threads, a.Threads, 10), fmt.Sprintf("%d then %d (flat: ± 10)", a.Threads, b.Threads)},
		check{"fds", near(b.FDs, a.FDs, 10), fmt.Sprintf("%d then %d (flat: ± 10)", a.FDs, b.FDs)},
	)
	rep.Pass = true
	for _, c := range rep.Checks {
		rep.Pass = rep.Pass && c.OK
	}
	return rep
}

// chaosCycle is the number of events after which chaos repeats itself:
// kill -9 of n1, SIGTERM of n2, kill -9 of a backend, with the backend
// going round the 3.
const chaosCycle = 9

// chaos runs the i-th event of the soak's cycle and says what it did.
func (l *lab) chaos(ctx context.Context, i int) string {
	restart := func(what string, fn func() error) string {
		sleepCtx(ctx, 3*time.Second)
		if err := fn(); err != nil {
			return what + " (restart failed: " + err.Error() + ")"
		}
		return what
	}
	switch i % 3 {
	case 0, 1: // kill -9 of n1, then SIGTERM of n2
		k := 1 + i%2
		if k >= len(l.nodes) {
			return "no node to kill"
		}
		n := l.nodes[k]
		what := "kill -9 " + n.name
		if i%3 == 1 {
			what = "SIGTERM " + n.name
			syscall.Kill(n.pid(), syscall.SIGTERM)
			select {
			case <-n.exited:
			case <-time.After(40 * time.Second):
			}
		}
		n.kill()
		return restart(what, func() error {
			nn, err := l.restartNode(ctx, n)
			if err == nil {
				l.nodes[k] = nn
			}
			return err
		})
	default: // kill -9 of a backend
		k := (i / 3) % len(l.echoes)
		e := l.echoes[k]
		e.kill()
		return restart("kill -9 "+e.name, func() error {
			c, _, err := l.startEcho(ctx, e.name, l.echoAddr[k])
			if err == nil {
				l.echoes[k] = c
			}
			return err
		})
	}
}

// saveHeap writes n0's heap profile at minute m into the logs, so that
// `go tool pprof -diff_base` names what grew between the warm-up and the
// end.
func (l *lab) saveHeap(m int) {
	path := filepath.Join(l.dir, fmt.Sprintf("n0-heap-minute-%d.pb.gz", m))
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + l.nodes[0].admin + "/debug/pprof/heap?gc=1")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return
	}
	if f, err := os.Create(path); err == nil {
		io.Copy(f, resp.Body)
		f.Close()
	}
}

// medianRSS is the median RSS of ss.
func medianRSS(ss []soakSample) int64 {
	v := make([]int64, len(ss))
	for i, s := range ss {
		v[i] = s.RSSKiB
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// rssTrend is the least-squares slope of RSS over ss, in MB an hour.
func rssTrend(ss []soakSample) float64 {
	n := float64(len(ss))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for _, s := range ss {
		x, y := float64(s.Minute), mb(s.RSSKiB)
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d * 60
}
