package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/demo"
)

func runEcho(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlb echo", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9001", "host:port to serve on")
	id := fs.String("id", "", "name this backend answers with (default: the listen address)")
	const head = `Usage: meshlb echo [--listen host:port] [--id NAME]

A demo backend: WebSocket echo on any path (the text message "whoami" is
answered with its id, so you see which backend a session reached) and HTTP
GET answered with its id.

Flags:
`
	if done, code := parseFlags(fs, args, stderr, head); done {
		return code
	}
	log := newLogger(stderr, zerolog.InfoLevel, "auto")
	e := &demo.Echo{ID: *id, Logger: log}
	if e.ID == "" {
		e.ID = *listen
	}
	if err := e.Start(*listen); err != nil {
		fmt.Fprintf(stderr, "meshlb echo: %v\n", err)
		return 1
	}
	log.Info().Str("id", e.ID).Str("addr", e.Addr()).Msg("echo backend started")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("echo shutdown incomplete")
	}
	return 0
}
