package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/router"
	"github.com/meshlb/meshlb/tlsconf"
)

// AffinityConfig turns on the signed affinity cookie (router/affinity.go).
// Both fields are mesh-wide.
type AffinityConfig struct {
	// Cookie is the cookie's name; "" is off.
	Cookie string
	// MaxAge is the cookie's lifetime. Default DefaultAffinityMaxAge.
	MaxAge time.Duration
}

// DefaultAffinityMaxAge is the affinity cookie's default lifetime.
const DefaultAffinityMaxAge = 24 * time.Hour

// kindAffinityKey holds the mesh's affinity signing keys, in the ticket
// keys' format (tlsconf): named by the unix second they start to sign, a
// version byte and 32 bytes. Secret: they never travel without a gossip key.
const kindAffinityKey gossip.Kind = 11

func affinityKeySpec() gossip.KindSpec {
	return gossip.KindSpec{
		Kind: kindAffinityKey, Name: "affinity_key",
		// Keys rotate at most hourly (affinityPeriod); tombstones live a
		// day: some 30 entries of about 100 bytes.
		MaxValue: tlsconf.TicketValueLen, MaxEntries: 128, MaxBytes: 16 << 10,
		Validate: tlsconf.ValidateTicketEntry,
		Secret:   true,
		RelayAll: true, // a node without the current key honours no new cookie
	}
}

func (c AffinityConfig) validate(hasGossipKey bool, sessionCookie string) error {
	if c.Cookie == "" {
		return nil
	}
	switch {
	case !hasGossipKey:
		return errors.New("affinity cookie: needs a gossip key (--gossip-key): its signing keys travel over gossip and never in clear")
	case !validCookieName(c.Cookie):
		return fmt.Errorf("affinity cookie %q: want a cookie name (letters, digits and !#$%%&'*+-.^_`|~)", c.Cookie)
	case c.Cookie == sessionCookie:
		return fmt.Errorf("affinity cookie %q: also the session cookie's name", c.Cookie)
	case c.MaxAge < time.Second:
		return fmt.Errorf("affinity max age %v: want at least 1s", c.MaxAge)
	}
	return nil
}

func validCookieName(s string) bool {
	c := http.Cookie{Name: s, Value: "v"}
	return len(s) <= 64 && c.Valid() == nil
}

// affinityPeriod is the keys' rotation period: at least the cookie's max
// age, so that with the current key and the two before it held
// (tlsconf.TicketPlan) no rotation drops a key a live cookie was signed
// with.
func (c AffinityConfig) affinityPeriod() time.Duration {
	return max(c.MaxAge, time.Hour).Truncate(time.Second)
}

// initAffinity wires the cookie into the router config.
func (n *Node) initAffinity(rcfg *router.Config) {
	a := n.cfg.Affinity
	if a.Cookie == "" {
		return
	}
	n.affKeys = &router.AffinityKeys{}
	rcfg.Affinity = &router.Affinity{Cookie: a.Cookie, MaxAge: a.MaxAge, Keys: n.affKeys, Lookup: n.affinityLookup}
}

// affinityLookup is the backend a valid cookie names while it is on the
// ring of the request's pool: in the catalog, of that pool, active, and
// not taken out by health.
func (n *Node) affinityLookup(pool, id string) (router.Backend, bool) {
	t := n.table.Load()
	if t == nil || t.Pool(pool) == nil {
		return router.Backend{}, false
	}
	addr, ok := t.Pool(pool).Addr(id)
	return router.Backend{ID: id, Addr: addr}, ok
}

// affinityLoop keeps the router's keys those of the mesh; the minter (the
// ticket keys' one) makes and drops keys on the rotation schedule.
func (n *Node) affinityLoop(ctx context.Context) {
	if n.affKeys == nil {
		return
	}
	changes := n.cluster.Subscribe()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n.tickAffinity(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		}
	}
}

func (n *Node) tickAffinity(now time.Time) {
	period := n.cfg.Affinity.affinityPeriod()
	keys := n.affinityKeys()
	if n.cluster.Synced() && !n.draining.Load() && n.ticketMinter() == n.cfg.Name {
		var starts []time.Time
		for _, k := range keys {
			starts = append(starts, time.Unix(k.Start, 0))
		}
		mint, drop := tlsconf.TicketPlan(starts, now, period)
		for _, at := range mint {
			var k [tlsconf.TicketKeyLen]byte
			_, _ = rand.Read(k[:]) // never fails (crypto/rand, Go 1.24+)
			n.updateAffinityKey(at, gossip.Entry{Value: tlsconf.EncodeTicketKey(k)})
		}
		for _, at := range drop {
			n.updateAffinityKey(at, gossip.Entry{Deleted: true})
		}
		if len(mint)+len(drop) > 0 {
			keys = n.affinityKeys()
		}
	}
	n.affKeys.Set(keys)
}

// updateAffinityKey writes a new key (never over a live one) or deletes one.
func (n *Node) updateAffinityKey(at time.Time, e gossip.Entry) {
	_, err := n.cluster.Update(kindAffinityKey, tlsconf.TicketKeyName(at), func(cur gossip.Entry, ok bool) (gossip.Entry, bool, error) {
		if e.Deleted != (ok && !cur.Deleted) {
			return cur, false, nil
		}
		return e, true, nil
	})
	if err != nil {
		n.log.Warn().Err(err).Time("start", at).Bool("delete", e.Deleted).Msg("affinity key update failed")
	}
}

func (n *Node) affinityKeys() []router.AffinityKey {
	var out []router.AffinityKey
	for _, e := range n.cluster.Entries(kindAffinityKey) {
		if e.Deleted {
			continue
		}
		if k, err := tlsconf.DecodeTicketKey(e.Key, e.Value); err == nil {
			out = append(out, router.AffinityKey{Start: k.Start.Unix(), Key: k.Key})
		}
	}
	return out
}

// explainAffinity is /v1/route's reading of a cookie value: the backend it
// pins, or why it is not honoured.
func (n *Node) explainAffinity(pool, value string) (router.Backend, string) {
	if n.affKeys == nil {
		return router.Backend{}, "affinity cookie is off on this node"
	}
	id, _, err := router.DecodeAffinity(n.affKeys, n.cfg.Affinity.Cookie, value, n.cfg.Affinity.MaxAge, time.Now())
	if err != nil {
		return router.Backend{}, err.Error()
	}
	b, ok := n.affinityLookup(pool, id)
	if !ok {
		return router.Backend{}, fmt.Sprintf("backend %q is not on the ring of pool %s (removed, draining, unhealthy or of another pool)", id, pool)
	}
	return b, ""
}
