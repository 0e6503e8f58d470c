package gossip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

const (
	// resolveTimeout bounds one DNS lookup of a seed.
	resolveTimeout = 5 * time.Second
	// maxJoinBackoff caps the retry delay of the first join.
	maxJoinBackoff = 30 * time.Second
	// rejoinFailedPeers is how many failed peers one rejoin round tries.
	rejoinFailedPeers = 3
)

// joiner joins the seeds until one answers, then, every RejoinInterval,
// re-joins the seeds and a few failed peers that are not members: after a
// partition longer than the suspicion window, the two halves have declared
// each other dead and only this brings them back together.
type joiner struct{ c *Cluster }

func (j *joiner) run(ctx context.Context) {
	c := j.c
	backoff := min(250*time.Millisecond, c.cfg.RejoinInterval)
	for attempt := 1; !c.synced.Load(); attempt++ {
		err := j.joinSeeds(ctx)
		if err == nil || c.synced.Load() {
			break
		}
		if ctx.Err() != nil {
			return
		}
		e := c.log.Warn().Err(err).Strs("seeds", c.cfg.Seeds).Int("attempt", attempt).Dur("retry_in", backoff)
		if primary, all, kerr := c.Keys(); kerr == nil {
			// A peer that cannot decrypt us closes the stream without a
			// word, so the error is a bare EOF: say what we hold, so that
			// a node left behind by a key rotation is told apart.
			ids := make([]string, len(all))
			for i, k := range all {
				ids[i] = KeyID(k)
			}
			e.Str("primary_key_id", KeyID(primary)).Strs("key_ids", ids).
				Str("hint", "if the mesh rotated its gossip key, this node lacks the current one")
		}
		e.Msg("join failed")
		if !sleep(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, c.cfg.RejoinInterval, maxJoinBackoff)
	}
	for sleep(ctx, jitter(c.cfg.RejoinInterval)) {
		j.rejoin(ctx)
	}
}

// joinSeeds tries every seed address until one push/pull with a peer
// succeeds.
func (j *joiner) joinSeeds(ctx context.Context) error {
	c := j.c
	addrs, selfOnly, err := c.resolveSeeds(ctx)
	if selfOnly {
		// We are the only seed: a configured single node, or the first one.
		c.synced.Store(true)
		c.log.Info().Msg("seeds point at this node only")
		return nil
	}
	// Every address, not just the first that answers: seeds that started
	// at the same time may be islands that only we can connect now.
	errs := []error{err}
	joined := ""
	for _, a := range addrs {
		if ctx.Err() != nil || c.left.Load() {
			return ctx.Err()
		}
		if err := c.pushPull(a, "join"); err != nil {
			errs = append(errs, err)
			continue
		}
		if c.synced.Load() && joined == "" { // false if a seed was ourselves under another address
			joined = a
		}
	}
	if joined != "" {
		c.log.Info().Str("seed", joined).Int("members", int(c.numNodes.Load())).Msg("joined mesh")
		return nil
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return errors.New("no seed answered")
}

// rejoin joins the seeds and a few failed peers that are not live members.
func (j *joiner) rejoin(ctx context.Context) {
	c := j.c
	if c.left.Load() {
		return
	}
	liveAddr := make(map[string]bool)
	liveName := make(map[string]bool)
	for _, m := range c.Members() {
		liveAddr[m.Addr] = true
		liveName[m.Name] = true
	}
	seeds, _, err := c.resolveSeeds(ctx)
	if err != nil {
		c.log.Debug().Err(err).Msg("seed resolution failed")
	}
	var targets []string
	for _, a := range seeds {
		if !liveAddr[a] {
			targets = append(targets, a)
		}
	}
	var failed []string
	c.mu.Lock()
	for name, f := range c.failed {
		if !liveName[name] && !liveAddr[f.addr] {
			failed = append(failed, f.addr)
		}
	}
	c.mu.Unlock()
	rand.Shuffle(len(failed), func(i, k int) { failed[i], failed[k] = failed[k], failed[i] })
	targets = append(targets, failed[:min(len(failed), rejoinFailedPeers)]...)

	seen := make(map[string]bool)
	for _, a := range targets {
		if seen[a] {
			continue
		}
		seen[a] = true
		if ctx.Err() != nil || c.left.Load() {
			return
		}
		before := c.numNodes.Load()
		if err := c.pushPull(a, "rejoin"); err != nil {
			c.log.Debug().Err(err).Str("addr", a).Msg("rejoin failed")
			continue
		}
		// A seed reached under another address than it advertises is
		// re-joined every round; say so only when it merged something.
		if after := c.numNodes.Load(); after > before {
			c.log.Info().Str("addr", a).Int64("members", after).Msg("rejoined peers")
		} else {
			c.log.Debug().Str("addr", a).Msg("rejoin found nothing new")
		}
	}
}

// pushPull does a memberlist join with addr: with a member, that is a
// push/pull of the membership and of the catalog.
func (c *Cluster) pushPull(addr, reason string) error {
	ml := c.ml.Load()
	if ml == nil {
		return errShutdown
	}
	c.m.syncs.WithLabelValues(reason).Inc()
	if _, err := ml.Join([]string{addr}); err != nil {
		c.m.syncErrors.WithLabelValues(reason).Inc()
		return fmt.Errorf("join %v: %w", addr, err)
	}
	return nil
}

// resolveSeeds resolves the seeds to ip:port addresses (every A/AAAA record
// of a name), leaving out our own address. selfOnly is true when every seed
// resolved, to us alone.
func (c *Cluster) resolveSeeds(ctx context.Context) (addrs []string, selfOnly bool, err error) {
	self := map[string]bool{c.GossipAddr(): true, c.cfg.BindAddr: true}
	seen := make(map[string]bool)
	sawSelf := false
	var errs []error
	for _, s := range c.cfg.Seeds {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("seed %q: %w", s, err))
			continue
		}
		var ips []net.IP
		if ip := net.ParseIP(host); ip != nil {
			ips = []net.IP{ip}
		} else {
			lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
			ias, err := net.DefaultResolver.LookupIPAddr(lctx, host)
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("resolve seed %q: %w", s, err))
				continue
			}
			for _, ia := range ias {
				ips = append(ips, ia.IP)
			}
		}
		for _, ip := range ips {
			a := net.JoinHostPort(ip.String(), port)
			switch {
			case self[a]:
				sawSelf = true
			case !seen[a]:
				seen[a] = true
				addrs = append(addrs, a)
			}
		}
	}
	err = errors.Join(errs...)
	return addrs, sawSelf && len(addrs) == 0 && err == nil, err
}

// repairRequest asks for a push/pull with a peer whose ack carried another
// catalog digest.
type repairRequest struct {
	peer   string
	addr   string
	digest uint64 // the peer's
	mine   uint64 // ours when the ack came
	seen   time.Time
}

// repairer does the push/pulls that digest mismatches ask for, one at a time
// and at most one per half probe interval. Only a node that sees a digest it
// never had asks (the other side is behind and asks when it probes), and it
// first waits half a probe interval so a broadcast in flight can land; if
// our own catalog changed meanwhile, deltas are still flowing and the
// request is dropped (the next probe asks again if the mismatch remains).
type repairer struct{ c *Cluster }

func (r *repairer) run(ctx context.Context) {
	c := r.c
	grace := c.cfg.ProbeInterval / 2
	var last time.Time
	for {
		var req repairRequest
		select {
		case <-ctx.Done():
			return
		case req = <-c.repairCh:
		}
		at := req.seen.Add(grace)
		if next := last.Add(grace); next.After(at) {
			at = next
		}
		if !sleep(ctx, time.Until(at)) {
			return
		}
		if c.left.Load() || c.knownDigest(req.digest) {
			continue // we went through the peer's state: caught up meanwhile
		}
		if c.digest.Load() != req.mine {
			// Deltas are still arriving: the mismatch is likely one in
			// flight. A real one shows again at a quiet probe.
			continue
		}
		last = time.Now()
		if err := c.pushPull(req.addr, "digest"); err != nil {
			c.log.Debug().Err(err).Str("peer", req.peer).Msg("repair failed")
		}
	}
}

// sleep waits d, or less if ctx ends first; it reports whether ctx is live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads d over ±25 %, so nodes started together do not act together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d*3/4 + rand.N(d/2+1)
}
