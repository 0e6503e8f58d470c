package node

import (
	"math"
	"sync"
)

// Descriptors a node keeps for itself, out of the open-file limit, when
// it derives MaxConns: gossip (two listeners and its streams), health
// checks (one connection per backend being checked), DNS lookups, the
// admin API, the reserve descriptors, the log and the epoll loops. 256
// is a few times what a node with a hundred backends holds at once.
const fdReserve = 256

// maxIdleBackendConns is the router transport's pool of idle keep-alive
// connections to backends (router's MaxIdleConns): descriptors held that
// no request counts.
const maxIdleBackendConns = 1024

// autoMaxConns derives a connection limit from an open-file limit: each
// proxied request or WebSocket holds two descriptors (the client's and
// the backend's), after fdReserve and the idle pool (at most an eighth of
// the limit) are kept back. With a limit too small for that it allows a
// quarter of the limit, at least 1. A limit of 0 (unknown) gives 0,
// unlimited.
func autoMaxConns(limit uint64) int {
	if limit == 0 {
		return 0
	}
	reserve := fdReserve + min(maxIdleBackendConns, limit/8)
	n := uint64(0)
	if limit > 2*reserve {
		n = (limit - reserve) / 2
	} else {
		n = max(1, limit/4)
	}
	return int(min(n, math.MaxInt32))
}

var (
	fdLimitOnce sync.Once
	fdLimit     uint64
)

// processFDLimit raises the process's soft open-file limit once and
// returns it.
func processFDLimit() uint64 {
	fdLimitOnce.Do(func() { fdLimit = raiseFDLimit() })
	return fdLimit
}

// resolveMaxConns turns Config.Router.MaxConns into the router's: 0
// (auto) derives it from the open-file limit, negative is unlimited (the
// router's 0), a positive number stands. It also returns the limit it
// derived from, for the start-up log.
func resolveMaxConns(configured int) (maxConns int, fdLimit uint64, auto bool) {
	switch {
	case configured > 0:
		return configured, 0, false
	case configured < 0:
		return 0, 0, false
	}
	lim := processFDLimit()
	return autoMaxConns(lim), lim, true
}

// logLimits reports at start the connection limit in force and, when
// derived, what from.
func (n *Node) logLimits() {
	maxConns, lim, auto := resolveMaxConns(n.cfg.Router.MaxConns)
	e := n.log.Info().Int("max_conns", maxConns).Bool("unlimited", maxConns == 0).Bool("auto", auto)
	if auto {
		e = e.Uint64("fd_limit", lim).Int("fd_reserve", fdReserve)
	}
	e.Msg("connection limit")
}
