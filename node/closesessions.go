package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/ring"
	"github.com/meshlb/meshlb/router"
)

// Session control (HAProxy's "shutdown sessions server"): drain or remove
// a backend with close_sessions, and every node closes its WebSockets to
// that backend with 1012 over a jittered window, so they reconnect to
// their new owners. The request is replicated state, kind 12, keyed by
// the backend ID: each node acts once on each version it sees, and only
// while it is recent, so a node that joins later (with no sessions to
// close) or an old entry coming back by push/pull closes nothing.
const kindCloseSessions gossip.Kind = 12

// closeIntentMaxAge is how long after it was written a close request is
// still acted on; past it the entry is inert and deleted by its writer.
const closeIntentMaxAge = 5 * time.Minute

// MaxCloseSpread bounds close_sessions' spread.
const MaxCloseSpread = 10 * time.Minute

func closeSessionsSpec() gossip.KindSpec {
	return gossip.KindSpec{
		Kind: kindCloseSessions, Name: "close_sessions",
		// One per backend at most, a few bytes each; tombstones a day.
		MaxValue: 16, MaxEntries: 4096, MaxBytes: 32 << 10,
		Validate: func(key string, value []byte) error {
			if err := ring.ValidateID(key); err != nil {
				return err
			}
			_, err := decodeCloseIntent(value)
			return err
		},
		RelayAll: true, // a node that misses it keeps the sessions
	}
}

// closeIntent is the value of a kindCloseSessions entry.
type closeIntent struct {
	Spread time.Duration
}

// encodeCloseIntent: version 1, then the spread in milliseconds (uvarint).
func encodeCloseIntent(ci closeIntent) []byte {
	return binary.AppendUvarint([]byte{1}, uint64(ci.Spread/time.Millisecond))
}

func decodeCloseIntent(b []byte) (closeIntent, error) {
	if len(b) == 0 || b[0] != 1 {
		return closeIntent{}, errors.New("close sessions: unknown version")
	}
	ms, n := binary.Uvarint(b[1:])
	if n <= 0 || 1+n != len(b) {
		return closeIntent{}, errors.New("close sessions: bad spread")
	}
	d := time.Duration(ms) * time.Millisecond
	if ms > uint64(MaxCloseSpread/time.Millisecond) {
		return closeIntent{}, fmt.Errorf("close sessions: spread %v over %v", d, MaxCloseSpread)
	}
	return closeIntent{Spread: d}, nil
}

// requestCloseSessions writes the mesh-wide request to close backend's
// WebSockets; this node acts on it through its loop like every other.
func (n *Node) requestCloseSessions(backend string, spread time.Duration) error {
	_, err := n.cluster.Put(kindCloseSessions, backend, encodeCloseIntent(closeIntent{Spread: spread}))
	return err
}

// closeSessionsLoop acts on the mesh's close requests.
func (n *Node) closeSessionsLoop(ctx context.Context) {
	changes := n.cluster.Subscribe()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	acted := map[string]uint64{} // backend → the version acted on
	for {
		now := time.Now()
		for _, e := range n.cluster.Entries(kindCloseSessions) {
			age := now.Sub(e.Time())
			if e.Deleted || acted[e.Key] >= e.Version {
				continue
			}
			acted[e.Key] = e.Version
			if age > closeIntentMaxAge {
				if e.Origin == n.cfg.Name {
					_, _ = n.cluster.Delete(kindCloseSessions, e.Key)
				}
				continue
			}
			ci, err := decodeCloseIntent(e.Value)
			if err != nil { // Validate let it in: another version's
				continue
			}
			n.wg.Go(func() { n.closeSessions(ctx, e.Key, ci.Spread, e.Origin) })
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
			// Clean up this node's own old requests; a peer's are left
			// to it (they are inert past closeIntentMaxAge anyway).
			for k, v := range acted {
				if e, ok := n.cluster.Get(kindCloseSessions, k); !ok || e.Version != v {
					delete(acted, k)
				} else if e.Origin == n.cfg.Name && !e.Deleted && time.Since(e.Time()) > closeIntentMaxAge {
					_, _ = n.cluster.Delete(kindCloseSessions, k)
				}
			}
		}
	}
}

func (n *Node) closeSessions(ctx context.Context, backend string, spread time.Duration, origin string) {
	// The spread plus the time a client takes to answer the close frame.
	cctx, cancel := context.WithTimeout(ctx, spread+10*time.Second)
	defer cancel()
	start := time.Now()
	count, err := n.router.CloseSessions(cctx, backend, router.CloseServiceRestart, spread)
	e := n.log.Info()
	if err != nil {
		e = n.log.Warn().Err(err)
	}
	e.Str("backend", backend).Int("sessions", count).Str("requested_by", origin).
		Dur("spread", spread).Dur("took", time.Since(start)).Msg("backend sessions closed")
}
