package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshlb/meshlb/router"
)

// picker adapts the routing table to router.Picker: the owner of the key
// on its pool's ring first, then its failover candidates in the ring's order. A backend
// this node's own checks see down, while the mesh keeps it in, goes last:
// this node fails over locally and leaves the ring alone.
type picker struct{ n *Node }

var _ router.Picker = picker{}

func (p picker) Pick(pool string, key []byte, k int) ([]router.Backend, error) {
	if r := p.n.driftRefusal(); r != "" {
		return nil, &router.UnavailableError{Reason: r}
	}
	tt := p.n.table.Load()
	if tt == nil {
		return nil, router.ErrNoBackends
	}
	t := tt.Pool(pool)
	if t == nil {
		return nil, router.ErrNoBackends
	}
	ids := t.Ring.Candidates(key, k+rampExtra)
	ids, _ = t.rampOrder(key, ids, p.n.cfg.SlowStart, time.Now())
	ids = ids[:min(k, len(ids))]
	out := make([]router.Backend, 0, len(ids))
	var down []router.Backend
	for _, id := range ids {
		addr, _ := t.Addr(id)
		b := router.Backend{ID: id, Addr: addr}
		if p.n.checker.LocallyDown(id) {
			down = append(down, b)
			continue
		}
		out = append(out, b)
	}
	return append(out, down...), nil
}

// drain is the proxy's part of a graceful stop, in the order users of
// HAProxy and Envoy expect: readiness is already false; keep serving for
// DrainDelay so that load balancers and DNS notice; stop accepting; close
// WebSockets with a close frame spread over DrainSpread (no reconnect
// storm); let HTTP requests finish until DrainTimeout.
func (n *Node) drain(ctx context.Context) error {
	if n.proxySrv == nil {
		return nil
	}
	if d := n.cfg.DrainDelay; d > 0 {
		n.log.Info().Dur("delay", d).Msg("draining: still serving while peers and load balancers notice")
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	dctx, cancel := context.WithTimeout(ctx, n.cfg.DrainTimeout)
	defer cancel()
	var errs []error
	done := make(chan error, 1)
	// Shutdown closes the listener at once and then waits for HTTP
	// requests; WebSockets are hijacked, so the router drains them itself.
	go func() { done <- n.proxySrv.Shutdown(dctx) }()
	n.log.Info().Int("websockets", n.router.ActiveWebSockets()).Dur("spread", n.cfg.DrainSpread).Msg("draining: closing websockets")
	if err := n.router.Drain(dctx, n.cfg.DrainCloseCode, n.cfg.DrainSpread); err != nil {
		errs = append(errs, fmt.Errorf("drain websockets: %w", err))
	}
	if err := <-done; err != nil {
		errs = append(errs, fmt.Errorf("drain http: %w", err))
	}
	return errors.Join(errs...)
}
