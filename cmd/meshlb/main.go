// Command meshlb runs a meshlb node and talks to one through its admin API.
//
//	meshlb node      run a node
//	meshlb status    show a node's view of the mesh
//	meshlb route K   show where a key goes
//	meshlb backends  list, add, drain or remove backends
//	meshlb echo      a demo backend
//	meshlb demo      a demo mesh on loopback
//	meshlb bench     a load client and checker for a mesh
//
// cmd/meshlb only turns flags, environment and config files into a
// node.Config, sets up the logger and signals, and picks the exit code:
// 0 success, 1 a runtime failure, 2 a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/config"
	"github.com/meshlb/meshlb/internal/threadtrim"
	"github.com/meshlb/meshlb/node"
)

const usage = `Usage: meshlb <command> [flags]

meshlb balances long-lived WebSocket and HTTP sessions across backends with no
central load balancer: run identical nodes, join them through a seed, and any
node routes a session to the same backend.

Commands:
  node       run a node                      (meshlb node --help)
  status     a node's view of the mesh       (meshlb status --help)
  route KEY  which backend a key goes to
  backends   list | add [id=]host:port | drain ID | undrain ID | remove ID
  keys       list | install KEY | use KEY | remove KEY: rotate the gossip
             key on every node (meshlb keys --help)
  echo       a demo backend that answers with its name (meshlb echo --help)
  demo       a whole mesh with backends on loopback, and a page to watch it
  bench      load client and checker: sessions through the nodes, reconnects,
             misroutes, latency; exit 1 on a misroute (meshlb bench --help)

Admin commands talk to --admin-url (default $MESHLB_ADMIN_URL or
http://127.0.0.1:9901), with --token (default $MESHLB_ADMIN_TOKEN) and, for
https, --cacert and --cert/--key.
`

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "node":
		return runNode(args[1:], environ, stderr)
	case "echo":
		return runEcho(args[1:], stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "bench":
		return runBench(args[1:], stdout, stderr)
	case "status", "route", "backends", "keys":
		return runAdmin(args[0], args[1:], environ, stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "meshlb: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func runNode(args, environ []string, stderr io.Writer) int {
	c, err := config.ParseNode(args, environ, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "meshlb node: %v\n", err)
		return 2
	}
	log := newLogger(stderr, c.LogLevel, c.LogFormat)
	c.Node.Logger = log

	n, err := node.New(c.Node)
	if err != nil {
		fmt.Fprintf(stderr, "meshlb node: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	defer reloadOnHUP(&reloader{n: n, log: log, args: args, environ: environ, cur: c})()
	if err := n.Start(ctx); err != nil {
		log.Error().Err(err).Msg("start failed")
		fmt.Fprintf(stderr, "meshlb node: %v\n", err)
		return 1
	}
	// A burst of blocking calls leaves OS threads that Go never ends.
	go threadtrim.Run(ctx, threadTrimInterval, func(ended int) {
		log.Debug().Int("ended", ended).Msg("idle threads ended")
	})
	<-ctx.Done()
	stop() // from here a second signal takes the default action: exit at once
	log.Info().Msg("signal received; leaving the mesh (send it again to stop at once)")
	// The deadline follows the configuration, so that a long drain is not
	// cut and the leave still gets its budget after it.
	sctx, cancel := context.WithTimeout(context.Background(), c.Node.ShutdownTimeout())
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		log.Error().Err(err).Msg("shutdown incomplete")
		return 1
	}
	return 0
}

// threadTrimInterval is how often the node ends idle OS threads past
// GOMAXPROCS + threadtrim.Slack.
const threadTrimInterval = 10 * time.Second

// logTimeFormat gives log timestamps milliseconds: zerolog's default is
// whole seconds, too coarse to order a mesh's events across nodes.
const logTimeFormat = "2006-01-02T15:04:05.000Z07:00"

func newLogger(w io.Writer, level zerolog.Level, format string) zerolog.Logger {
	zerolog.TimeFieldFormat = logTimeFormat // global; set before the first line
	if format == "console" || (format == "auto" && isTerminal(w)) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	// The level is the global one so that a reload can change it for
	// every logger derived from this one.
	zerolog.SetGlobalLevel(level)
	return zerolog.New(w).With().Timestamp().Logger()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
