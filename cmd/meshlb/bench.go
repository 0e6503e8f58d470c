package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/loadgen"
)

const benchUsage = `Usage: meshlb bench (--nodes host:port,... | --target name:port) [--admin host:port,...] [flags]

A load client and checker for a mesh. It opens --sessions WebSocket sessions
(ws://NODE/PATH?session_id=ID), spreads their connects over the nodes as DNS
round robin would, reconnects through another node with backoff when a
connection ends, asks "whoami" every --whoami-interval and echoes a payload.

A session that meets a different backend while the backend set (polled from
--admin, GET /v1/backends) did not change is a MISROUTE. A move is counted as
"moved (backend set changed)" when the set changed between --move-window
before the session's previous connection opened and --move-window after the move.

Exit status: 0 no misroutes and error rate <= --max-error-rate; 1 otherwise;
2 usage error. --json prints the report as JSON (fields in README.md).

Flags:
`

// listFlag collects a repeatable, comma-separated flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

func runBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlb bench", flag.ContinueOnError)
	var nodes, admins listFlag
	fs.Var(&nodes, "nodes", "node proxy addresses host:port, comma-separated or repeated")
	target := fs.String("target", "", "a DNS `name:port` whose addresses are the nodes (re-resolved every second)")
	fs.Var(&admins, "admin", "admin API addresses (host:port or URL) to poll for the backend set; a name may resolve to many; with $MESHLB_ADMIN_TOKEN as the bearer token")
	path := fs.String("path", "/", "WebSocket path (and query) to open")
	keyParam := fs.String("key-param", "session_id", "query parameter carrying the session ID")
	sessions := fs.Int("sessions", 100, "concurrent sessions")
	duration := fs.Duration("duration", 30*time.Second, "length of the run, ramp included")
	rate := fs.Float64("rate", 200, "sessions opened per second during the ramp")
	whoami := fs.Duration("whoami-interval", time.Second, "how often each session asks whoami and echoes")
	payload := fs.Int("payload", 64, "echo payload size in bytes")
	seed := fs.Uint64("seed", 0, "seed for session IDs, payloads and jitter (0: random; the report shows it)")
	sources := fs.String("source-ips", "auto", "source addresses to spread connections over: auto, none, or a list like 127.0.0.2-127.0.0.50,127.0.1.1")
	maxErr := fs.Float64("max-error-rate", 0.01, "highest error rate (failed / all operations) that still passes")
	window := fs.Duration("move-window", 5*time.Second, "a move this close to a backend-set change is blamed on it")
	poll := fs.Duration("poll-interval", 500*time.Millisecond, "how often the backend set is polled")
	probe := fs.Bool("probe-backends", true, "also dial each in-ring backend at every poll; two failed dials in a row take it out of the set")
	connTimeout := fs.Duration("connect-timeout", 5*time.Second, "bound on a connect plus handshake")
	reqTimeout := fs.Duration("request-timeout", 5*time.Second, "bound on one whoami or echo round trip")
	backoffMin := fs.Duration("backoff-min", 100*time.Millisecond, "first reconnect backoff")
	backoffMax := fs.Duration("backoff-max", 5*time.Second, "largest reconnect backoff")
	waitReady := fs.Duration("wait-ready", 0, "first wait up to this long for an --admin node to be ready in an agreeing mesh (0: don't wait)")
	waitMembers := fs.Int("wait-members", 1, "with --wait-ready: the mesh must have at least this many nodes")
	asJSON := fs.Bool("json", false, "print the report as JSON on stdout")
	level := fs.String("log-level", "warn", "log level (debug logs every connection)")
	if done, code := parseFlags(fs, args, stderr, benchUsage); done {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "meshlb bench: "+format+"\n", a...)
		return 2
	}
	lvl, err := zerolog.ParseLevel(*level)
	if err != nil || *level == "" {
		return usageErr("--log-level %q is not one of debug, info, warn, error", *level)
	}
	if *sessions < 1 || *duration <= 0 || *rate <= 0 || *whoami <= 0 || *payload < 1 || *maxErr < 0 || *maxErr > 1 {
		return usageErr("--sessions, --duration, --rate, --whoami-interval and --payload must be positive, --max-error-rate in 0..1")
	}
	cfg := loadgen.Config{
		Nodes: nodes, Target: *target, Admin: admins, AdminToken: os.Getenv("MESHLB_ADMIN_TOKEN"),
		Path: *path, KeyParam: *keyParam,
		Sessions: *sessions, Duration: *duration, Rate: *rate,
		WhoamiInterval: *whoami, PayloadSize: *payload, Seed: *seed,
		MoveWindow: *window, PollInterval: *poll, ProbeBackends: *probe,
		ConnectTimeout: *connTimeout, RequestTimeout: *reqTimeout,
		BackoffMin: *backoffMin, BackoffMax: *backoffMax,
		WaitReady: *waitReady, WaitMembers: *waitMembers,
		Logger: newLogger(stderr, lvl, "auto"),
	}
	switch *sources {
	case "auto":
	case "none":
		cfg.NoSourceIPs = true
	default:
		if cfg.SourceIPs, err = loadgen.ParseSourceIPs(*sources); err != nil {
			return usageErr("--source-ips: %v", err)
		}
	}
	b, err := loadgen.New(cfg)
	if err != nil {
		return usageErr("%v", err)
	}
	if !*asJSON {
		fmt.Fprintf(stderr, "meshlb bench: %s\n", b.Describe())
		if len(admins) == 0 {
			fmt.Fprintln(stderr, "meshlb bench: no --admin: the backend set is unknown, so any move counts as a misroute")
		}
	}

	// Ctrl-C ends the run early; the report still comes.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := b.Run(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "meshlb bench: %v\n", err)
		return 1
	}
	ok := r.Judge(*maxErr)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			fmt.Fprintf(stderr, "meshlb bench: %v\n", err)
			return 1
		}
	} else if err := r.WriteSummary(stdout); err != nil {
		fmt.Fprintf(stderr, "meshlb bench: %v\n", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}
