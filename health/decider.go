package health

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Mesh is what the decider needs of the mesh: the membership it decides
// in, the catalog's backends, and the replicated observations and verdicts.
// The node adapts gossip to it; tests use an in-memory one. Every method
// must be safe for concurrent use and must not block.
type Mesh interface {
	// Self is this node's name.
	Self() string
	// Synced reports whether this node has exchanged state with the mesh:
	// one that has not would start from no verdicts and forget the
	// damping history.
	Synced() bool
	// Members are the live members, this node included, sorted by name.
	Members() []Member
	// Backends are the catalog's active and draining backends, by ID; the
	// slice may be shared: read only.
	Backends() []Backend
	// Observations and Verdicts are what the replica holds.
	Observations() []Observation
	Verdicts() map[string]Verdict
	// Observe publishes this node's own view (o.Node and o.Since are the
	// mesh's to fill in); SetVerdict writes a verdict with this node as its
	// origin, unless the one held is the Same. A write the mesh can no
	// longer take (the node left, the backend was removed) is no error.
	Observe(o Observation) error
	SetVerdict(v Verdict) error
	// Changes fires, coalesced, when any of the above may have changed.
	Changes() <-chan struct{}
}

// Backend is a backend of the catalog that health checks.
type Backend struct {
	ID, Addr string
	Draining bool   // drained by an operator: checked, but not in the budget
	Pool     string // for CheckConfig.PoolHTTPPath
}

// Decider timing. decideEvery bounds how long a hold can outlast its end,
// and re-runs the decision when no change prompts it. decideGap spaces
// decisions during a burst of gossip: each one copies every observation.
const (
	decideEvery = 250 * time.Millisecond
	decideGap   = 20 * time.Millisecond
)

// DeciderConfig configures a Decider.
type DeciderConfig struct {
	Policy Policy
	Mesh   Mesh
	// Checks, if set, is kept checking the catalog's backends.
	Checks *Checker
	// Leaving, if set, reports that this node is on its way out: it stops
	// deciding before its peers see it go. Default: never.
	Leaving func() bool
	Logger  zerolog.Logger
}

// Decider keeps a node's checks in step with the catalog and, while this
// node is the decider (see DeciderOf), turns the live votes into verdicts.
// It owns neither the ring nor the checks' results: verdicts reach every
// ring through the mesh, like any other change.
type Decider struct {
	cfg    DeciderConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	state  int // 0 new, 1 started, 2 shut down
}

// NewDecider validates cfg; it starts nothing.
func NewDecider(cfg DeciderConfig) (*Decider, error) {
	cfg.Policy = cfg.Policy.WithDefaults()
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	if cfg.Mesh == nil {
		return nil, errors.New("health decider: no mesh")
	}
	if cfg.Leaving == nil {
		cfg.Leaving = func() bool { return false }
	}
	return &Decider{cfg: cfg}, nil
}

// Start runs the decider until Shutdown or until ctx ends.
func (d *Decider) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != 0 {
		return errors.New("health decider: started twice or after shutdown")
	}
	d.state = 1
	run, cancel := context.WithCancel(ctx)
	d.cancel = cancel
	d.wg.Go(func() { d.run(run) })
	return nil
}

// Shutdown stops the decider and waits for it. It is safe to call more
// than once, and before Start.
func (d *Decider) Shutdown() {
	d.mu.Lock()
	if d.state == 1 {
		d.cancel()
	}
	d.state = 2
	d.mu.Unlock()
	d.wg.Wait()
}

func (d *Decider) run(ctx context.Context) {
	tick := time.NewTicker(decideEvery)
	defer tick.Stop()
	changes := d.cfg.Mesh.Changes()
	var synced []Backend
	first := true
	for {
		if bs := d.cfg.Mesh.Backends(); first || !slices.Equal(bs, synced) {
			d.syncChecks(bs)
			synced, first = bs, false
		}
		d.Decide(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-changes:
			select {
			case <-ctx.Done():
				return
			case <-time.After(decideGap):
			}
		case <-tick.C:
		}
	}
}

func (d *Decider) syncChecks(bs []Backend) {
	if d.cfg.Checks == nil {
		return
	}
	ts := make([]Target, len(bs))
	for i, b := range bs {
		ts[i] = Target{ID: b.ID, Addr: b.Addr, Pool: b.Pool}
	}
	d.cfg.Checks.Sync(ts)
}

// Decide writes the verdicts for now when this node is the decider. The
// loop calls it; it is exported for the node's tests.
func (d *Decider) Decide(now time.Time) {
	m := d.cfg.Mesh
	if !m.Synced() || d.cfg.Leaving() {
		return
	}
	members := m.Members()
	if DeciderOf(members) != m.Self() {
		return
	}
	var ids []string
	for _, b := range m.Backends() {
		if !b.Draining {
			ids = append(ids, b.ID)
		}
	}
	verdicts := m.Verdicts()
	tallies := Count(members, m.Observations(), ids, verdicts)
	for _, v := range Decide(d.cfg.Policy, tallies, len(ids), now) {
		prev, had := verdicts[v.ID]
		if v.ID == "" || (had && prev.Same(v)) {
			continue
		}
		if err := m.SetVerdict(v); err != nil {
			d.cfg.Logger.Error().Err(err).Str("backend", v.ID).Msg("write health verdict failed")
			continue
		}
		d.logVerdict(prev, v, len(ids))
	}
}

// logVerdict logs a decision that changes what the ring holds, or that the
// ejection budget overrode, once per change.
func (d *Decider) logVerdict(prev, v Verdict, active int) {
	if prev.Reason == v.Reason && prev.Strikes == v.Strikes {
		return // votes moved, the decision did not
	}
	p, log := d.cfg.Policy, d.cfg.Logger
	ev := log.Info()
	msg := "backend back in the ring"
	switch v.Reason {
	case VerdictDown:
		ev, msg = log.Warn(), "backend out of the ring: a quorum sees it down"
	case VerdictHeld:
		ev, msg = log.Warn(), "backend held out of the ring: flapping"
	case VerdictOverBudget:
		ev, msg = log.Error(), "backend kept in the ring although a quorum sees it down: ejection budget spent"
		if p.MaxEjectPercent == NoEjection {
			ev, msg = log.Warn(), "backend kept in the ring although a quorum sees it down: ejection is off"
		}
	}
	ev.Str("backend", v.ID).Int("down_votes", int(v.Votes)).Int("voters", int(v.Voters)).
		Int("strikes", int(v.Strikes)).Dur("hold", p.Hold(int(v.Strikes))).
		Int("max_ejected", p.Allowed(active)).Msg(msg)
}
