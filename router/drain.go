package router

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Drain closes every proxied WebSocket with a close frame carrying code
// (CloseGoingAway or CloseServiceRestart), spread uniformly with jitter
// over spread so that clients do not all reconnect at once. Each session
// is closed at a frame boundary; the client's close reply reaches the
// backend, so both ends see a clean close handshake. Drain waits until
// all are closed or ctx ends, then closes the rest hard and returns
// ctx.Err(). From the start of Drain, new WebSockets get 503. It is safe
// to call Drain more than once and concurrently with ServeHTTP.
func (rt *Router) Drain(ctx context.Context, code uint16, spread time.Duration) error {
	if !validCloseCode(code) {
		return fmt.Errorf("drain: invalid close code %d", code)
	}
	rt.mu.Lock()
	rt.draining = true
	conns := make([]*wsConn, 0, len(rt.conns))
	for _, c := range rt.conns {
		conns = append(conns, c)
	}
	rt.mu.Unlock()
	rt.log.Debug().Int("websockets", len(conns)).Uint16("code", code).Dur("spread", spread).Msg("draining websockets")

	return rt.closeSpread(ctx, conns, code, spread)
}

// CloseSessions closes the WebSockets proxied to backend with a close
// frame carrying code, spread as Drain spreads them, and reports how many
// it asked to close; unlike Drain it leaves new WebSockets alone (the
// backend is out of the ring by then, so they go elsewhere). It returns
// when the sessions have closed, or closes the rest hard when ctx ends.
func (rt *Router) CloseSessions(ctx context.Context, backend string, code uint16, spread time.Duration) (int, error) {
	if !validCloseCode(code) {
		return 0, fmt.Errorf("close sessions: invalid close code %d", code)
	}
	rt.mu.Lock()
	var conns []*wsConn
	for _, c := range rt.conns {
		if c.backendID == backend {
			conns = append(conns, c)
		}
	}
	rt.mu.Unlock()
	rt.log.Debug().Str("backend", backend).Int("websockets", len(conns)).Uint16("code", code).Dur("spread", spread).Msg("closing a backend's websockets")
	return len(conns), rt.closeSpread(ctx, conns, code, spread)
}

// closeSpread asks each of conns to close with code, at a random moment
// of its own slice of spread, and waits for them to end.
func (rt *Router) closeSpread(ctx context.Context, conns []*wsConn, code uint16, spread time.Duration) error {
	// Session i of n closes at a random moment of the i-th slice of
	// spread: uniform over the window, never bunched.
	rand.Shuffle(len(conns), func(i, j int) { conns[i], conns[j] = conns[j], conns[i] })
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i, c := range conns {
		at := time.Duration((float64(i) + rand.Float64()) / float64(len(conns)) * float64(spread))
		if wait := time.Until(start.Add(at)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return rt.closeHard(conns, ctx.Err())
			}
		}
		c.requestClose(code)
	}
	for _, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			return rt.closeHard(conns, ctx.Err())
		}
	}
	return nil
}

// closeHard closes conns now, waits until their sessions ended and
// returns err.
func (rt *Router) closeHard(conns []*wsConn, err error) error {
	for _, c := range conns {
		c.hardClose()
	}
	for _, c := range conns {
		<-c.done
	}
	return fmt.Errorf("drain: %w", err)
}

// Close closes every hijacked connection now, without a close frame, and
// waits for their goroutines. New WebSockets get 503 from then on; plain
// HTTP keeps working (http.Server.Shutdown owns those). It is safe to call
// Close more than once.
func (rt *Router) Close() error {
	rt.mu.Lock()
	rt.closed = true
	rt.draining = true
	conns := make([]*wsConn, 0, len(rt.conns))
	for _, c := range rt.conns {
		conns = append(conns, c)
	}
	rt.mu.Unlock()
	for _, c := range conns {
		c.hardClose()
	}
	rt.wg.Wait()
	rt.mu.Lock()
	ps := rt.polls
	rt.polls = nil
	rt.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
	rt.transport.CloseIdleConnections()
	return nil
}

// validCloseCode reports whether code may be sent in a close frame
// (RFC 6455 7.4).
func validCloseCode(code uint16) bool {
	switch {
	case code == 1004 || code == 1005 || code == 1006 || code == 1015:
		return false
	case code >= 1000 && code <= 1014:
		return true
	default:
		return code >= 3000 && code <= 4999
	}
}
