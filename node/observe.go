package node

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// accessLogPath returns where the access log goes, "" for nowhere.
func (c Config) accessLogPath() string {
	if c.AccessLog == "off" {
		return ""
	}
	return c.AccessLog
}

// openObserve opens the access log, first thing in Start, so that a path
// that can't be written fails the start before any port is bound.
func (n *Node) openObserve() error {
	path := n.cfg.accessLogPath()
	if path == "" {
		return nil
	}
	// One error line per failed flush at most, and those are rare: a full
	// disk shows once a second, not once a line.
	errLog := n.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: 10 * time.Second})
	al, err := openAccessLog(path, n.cfg.AccessLogKeys, func(err error) {
		errLog.Error().Err(err).Str("path", path).Msg("access log failed")
	})
	if err != nil {
		return err
	}
	n.obs.access = al
	go al.run() // its own life: it ends in stopObserve, after the router
	return nil
}

// startObserve starts the load summary and the event watcher; they stop
// with ctx.
func (n *Node) startObserve(ctx context.Context) {
	n.obs.ctx = ctx
	changes := n.cluster.Subscribe()
	n.wg.Go(func() { n.summaryLoop(ctx) })
	n.wg.Go(func() { n.watchEvents(ctx, changes) })
}

// stopObserve writes the access log's last lines and closes it.
func (n *Node) stopObserve() {
	if n.obs.access != nil {
		n.obs.access.close()
	}
}
