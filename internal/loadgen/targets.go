package loadgen

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"time"
)

// errNoNodes: neither the static list nor DNS gave an address to try.
var errNoNodes = errors.New("no node addresses")

// resolveTTL is how long one answer for the target name is reused. A real
// client's resolver caches too; a second keeps thousands of sessions from
// asking the resolver thousands of times while still following a change
// (a container gone from Docker's DNS) within a second.
const resolveTTL = time.Second

// targets hands out node addresses the way DNS round robin spreads clients:
// one shared rotation over the current address list. A session never gets
// the node it used last when another exists, and a node that refused a
// connect is skipped by everyone for a cooldown, as a client tries the next
// A record. Safe for concurrent use.
type targets struct {
	static   []string
	target   string // name:port, or ""
	lookup   func(ctx context.Context, host string) ([]string, error)
	cooldown time.Duration
	now      func() time.Time

	mu         sync.Mutex
	resolved   []string
	resolvedAt time.Time
	resolveErr error
	resolving  chan struct{} // closed when the lookup under way ends
	next       int
	down       map[string]time.Time // address → skip until
}

func newTargets(static []string, target string, r *net.Resolver, cooldown time.Duration) *targets {
	t := &targets{static: static, target: target, cooldown: cooldown, now: time.Now, down: map[string]time.Time{}}
	if r != nil {
		t.lookup = r.LookupHost
	}
	return t
}

// list returns the current candidate addresses: the static nodes and the
// target's addresses, de-duplicated, in a stable order. One caller at a
// time resolves an expired answer; the others go on with the old one (or
// wait for the first), so a crowd reconnecting at once asks the resolver
// once, not once each.
func (t *targets) list(ctx context.Context) ([]string, error) {
	t.mu.Lock()
	if t.target == "" || t.now().Sub(t.resolvedAt) < resolveTTL {
		defer t.mu.Unlock()
		return t.merged(), t.resolveErr
	}
	if wait := t.resolving; wait != nil {
		if !t.resolvedAt.IsZero() {
			defer t.mu.Unlock()
			return t.merged(), t.resolveErr
		}
		t.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.merged(), t.resolveErr
	}
	done := make(chan struct{})
	t.resolving = done
	t.mu.Unlock()

	host, port, _ := net.SplitHostPort(t.target)
	addrs, err := t.lookup(ctx, host)
	var fresh []string
	for _, a := range addrs {
		fresh = append(fresh, net.JoinHostPort(a, port))
	}
	slices.Sort(fresh)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.resolvedAt = t.now()
	if err != nil {
		// Keep serving the last answer: a resolver hiccup is not a
		// reason to stop connecting.
		t.resolveErr = err
	} else {
		t.resolved, t.resolveErr = fresh, nil
	}
	t.resolving = nil
	close(done)
	return t.merged(), t.resolveErr
}

func (t *targets) merged() []string {
	out := make([]string, 0, len(t.static)+len(t.resolved))
	out = append(out, t.static...)
	for _, a := range t.resolved {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// pick returns the next address in the rotation, avoiding last and nodes
// in cooldown while any other is available.
func (t *targets) pick(ctx context.Context, last string) (string, error) {
	addrs, err := t.list(ctx)
	if len(addrs) == 0 {
		if err == nil {
			err = errNoNodes
		}
		return "", err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	// Two passes: first only healthy nodes other than last, then anything
	// other than last, then last itself.
	for pass := range 3 {
		for i := range addrs {
			a := addrs[(t.next+i)%len(addrs)]
			if pass < 2 && a == last && len(addrs) > 1 {
				continue
			}
			if pass == 0 && now.Before(t.down[a]) {
				continue
			}
			t.next = (t.next + i + 1) % len(addrs)
			return a, nil
		}
	}
	return addrs[0], nil // unreachable: pass 2 accepts any
}

// failed puts addr in cooldown.
func (t *targets) failed(addr string) {
	t.mu.Lock()
	t.down[addr] = t.now().Add(t.cooldown)
	t.mu.Unlock()
}
