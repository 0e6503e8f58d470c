package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/config"
	"github.com/meshlb/meshlb/node"
)

// liveOptions are the options a SIGHUP applies to a running node; a change
// to any other is named in the log and waits for a restart. Files named by
// the TLS and token options are re-read by node.Reload whatever the file
// says.
var liveOptions = map[string]bool{"log-level": true, "backend": true}

// tunableOptions are the live options that set the proxy's limits and
// timeouts (router.Tunables), applied together.
var tunableOptions = map[string]bool{
	"max-conns": true, "backend-connect-timeout": true, "ws-handshake-backend-timeout": true,
	"tunnel-idle-timeout": true, "ws-idle-timeout": true, "ws-ping-interval": true,
	"ws-write-timeout": true, "ws-max-frame-size": true, "http-write-timeout": true,
}

// routeOptions are the live options that pick a request's pool and key,
// applied together (node.ApplyRoutes).
var routeOptions = map[string]bool{"route": true, "pool-route-key": true}

func init() {
	for name := range tunableOptions {
		liveOptions[name] = true
	}
	for name := range routeOptions {
		liveOptions[name] = true
	}
}

// reloader re-reads the configuration (flags, environment and --config
// file, as at start) and applies what can change live.
type reloader struct {
	n       *node.Node
	log     zerolog.Logger
	args    []string
	environ []string
	cur     config.Node // what is running
}

func (r *reloader) reload(ctx context.Context) {
	r.n.Reload()
	next, err := config.ParseNode(r.args, r.environ, io.Discard)
	if err != nil {
		r.log.Error().Err(err).Msg("config reload failed; keeping the running config")
		return
	}
	changed := config.Changed(r.cur, next)
	if len(changed) == 0 {
		r.log.Info().Msg("config reloaded; no option changed")
		return
	}
	var tunables, routes []string
	for _, name := range changed {
		if tunableOptions[name] {
			tunables = append(tunables, name)
			continue
		}
		if routeOptions[name] {
			routes = append(routes, name)
			continue
		}
		if !liveOptions[name] {
			// The value is not logged: it may be a secret (--gossip-key).
			r.log.Warn().Str("option", name).Msg("config change needs a restart; not applied")
			continue
		}
		switch name {
		case "log-level":
			zerolog.SetGlobalLevel(next.LogLevel)
			r.cur.LogLevel = next.LogLevel
			r.log.WithLevel(zerolog.NoLevel).Str("option", name).Str("log_level", next.LogLevel.String()).Msg("config change applied")
		case "backend":
			r.n.ApplyStaticBackends(ctx, r.cur.Node.Backends, next.Node.Backends)
			r.cur.Node.Backends = next.Node.Backends
			r.log.Info().Str("option", name).Int("backends", len(next.Node.Backends)).Msg("config change applied")
		}
		r.cur.Raw[name] = next.Raw[name]
	}
	if len(routes) > 0 {
		if err := r.n.ApplyRoutes(next.Node.Router.Routes, next.Node.Router.PoolKeySources); err != nil {
			r.log.Error().Err(err).Strs("options", routes).Msg("config change refused; keeping the running routes")
		} else {
			for _, name := range routes {
				r.cur.Raw[name] = next.Raw[name]
				r.log.Info().Str("option", name).Strs("value", next.Raw[name]).Msg("config change applied")
			}
		}
	}
	if len(tunables) > 0 {
		if err := r.n.ApplyTunables(next.Node.Router); err != nil {
			r.log.Error().Err(err).Strs("options", tunables).Msg("config change refused; keeping the running limits and timeouts")
			return
		}
		t := r.n.Tunables()
		for _, name := range tunables {
			r.cur.Raw[name] = next.Raw[name]
			r.log.Info().Str("option", name).Strs("value", next.Raw[name]).Msg("config change applied")
		}
		r.log.Info().Int("max_conns", t.MaxConns).Dur("backend_connect_timeout", t.DialTimeout).
			Dur("ws_handshake_backend_timeout", t.HandshakeTimeout).Dur("tunnel_idle_timeout", t.WSIdleTimeout).
			Dur("ws_ping_interval", t.WSPingInterval).Dur("ws_write_timeout", t.WSWriteTimeout).
			Int64("ws_max_frame_size", t.WSMaxFrameSize).Dur("http_write_timeout", t.HTTPWriteTimeout).
			Msg("limits and timeouts in force")
	}
}

// reloadOnHUP makes SIGHUP reload the configuration (reloader) instead of
// killing the node, which is SIGHUP's default action. The returned function
// stops it and waits for the goroutine.
func reloadOnHUP(r *reloader) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				r.reload(ctx)
			}
		}
	})
	return func() {
		signal.Stop(ch)
		cancel()
		wg.Wait()
	}
}
