package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
)

// decideEvery bounds how long a hold can outlast its end, and re-runs the
// decision when no gossip change prompts it. decideGap spaces decisions
// during a burst of gossip: each one copies every observation.
const (
	decideEvery = 250 * time.Millisecond
	decideGap   = 20 * time.Millisecond
)

// observe publishes a change of this node's view of a backend: its vote.
func (n *Node) observe(id string, up bool, detail string) {
	if err := n.cluster.Observe(id, up, detail); err != nil && !errors.Is(err, gossip.ErrClosed) && !errors.Is(err, gossip.ErrUnknownBackend) {
		n.log.Warn().Err(err).Str("backend", id).Msg("publish health observation failed")
	}
}

// healthLoop keeps the checks in step with the catalog and, on the decider,
// turns the votes into verdicts. It owns neither the ring nor the checks'
// results: verdicts reach the ring through gossip, like any other change.
func (n *Node) healthLoop(ctx context.Context) {
	tick := time.NewTicker(decideEvery)
	defer tick.Stop()
	var synced uint64
	first := true
	for {
		if d := n.cluster.CatalogDigest(); first || d != synced {
			n.syncChecks()
			synced, first = d, false
		}
		n.decide(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-n.cluster.HealthChanges():
			select {
			case <-ctx.Done():
				return
			case <-time.After(decideGap):
			}
		case <-tick.C:
		}
	}
}

// syncChecks checks the backends that may serve: active and draining.
func (n *Node) syncChecks() {
	var ts []health.Target
	for _, r := range n.cluster.Records() {
		if r.State == gossip.StateActive || r.State == gossip.StateDraining {
			ts = append(ts, health.Target{ID: r.ID, Addr: r.Addr})
		}
	}
	n.checker.Sync(ts)
}

// decide writes the verdicts when this node is the decider. A node that
// has not yet synced with the mesh does not decide: it would start from no
// verdicts and forget the damping history.
func (n *Node) decide(now time.Time) {
	if !n.cluster.Synced() || n.leaving.Load() {
		return
	}
	members := n.cluster.Members()
	if health.Decider(members) != n.cfg.Name {
		return
	}
	var ids []string
	for _, r := range n.cluster.Records() {
		if r.State == gossip.StateActive {
			ids = append(ids, r.ID)
		}
	}
	verdicts := n.cluster.Verdicts()
	tallies := health.Count(members, n.cluster.Observations(), ids, verdicts)
	for _, v := range health.Decide(n.cfg.HealthPolicy, tallies, len(ids), now) {
		prev, had := verdicts[v.ID]
		if v.ID == "" || (had && prev.Same(v)) {
			continue
		}
		if _, err := n.cluster.SetVerdict(v); err != nil {
			if !errors.Is(err, gossip.ErrClosed) && !errors.Is(err, gossip.ErrUnknownBackend) {
				n.log.Error().Err(err).Str("backend", v.ID).Msg("write health verdict failed")
			}
			continue
		}
		n.logVerdict(prev, v, len(ids))
	}
}

// logVerdict logs a decision that changes what the ring holds, or that the
// ejection budget overrode, once per change.
func (n *Node) logVerdict(prev, v gossip.Verdict, active int) {
	if prev.Reason == v.Reason && prev.Strikes == v.Strikes {
		return // votes moved, the decision did not
	}
	ev := n.log.Info()
	msg := "backend back in the ring"
	switch v.Reason {
	case gossip.VerdictDown:
		ev, msg = n.log.Warn(), "backend out of the ring: a quorum sees it down"
	case gossip.VerdictHeld:
		ev, msg = n.log.Warn(), "backend held out of the ring: flapping"
	case gossip.VerdictOverBudget:
		ev, msg = n.log.Error(), "backend kept in the ring although a quorum sees it down: ejection budget spent"
		if n.cfg.HealthPolicy.MaxEjectPercent == health.NoEjection {
			ev, msg = n.log.Warn(), "backend kept in the ring although a quorum sees it down: ejection is off"
		}
	}
	ev.Str("backend", v.ID).Int("down_votes", int(v.Votes)).Int("voters", int(v.Voters)).
		Int("strikes", int(v.Strikes)).Dur("hold", n.cfg.HealthPolicy.Hold(int(v.Strikes))).
		Int("max_ejected", n.cfg.HealthPolicy.Allowed(active)).Msg(msg)
}

// Effective states of a backend, as the admin API and metrics name them.
const (
	stateActive    = "active"    // on the ring
	stateDraining  = "draining"  // drained by an operator
	stateUnhealthy = "unhealthy" // out of the ring for health (down or held)
	stateRemoved   = "removed"   // removed by an operator (a tombstone)
)

var effectiveStates = []string{stateActive, stateDraining, stateUnhealthy, stateRemoved}

// effectiveState names what the mesh does with a backend.
func effectiveState(rec gossip.Record, v gossip.Verdict) string {
	switch rec.State {
	case gossip.StateDraining:
		return stateDraining
	case gossip.StateRemoved:
		return stateRemoved
	}
	if v.Down() {
		return stateUnhealthy
	}
	return stateActive
}

// BackendHealth is the mesh's health verdict on a backend.
type BackendHealth struct {
	// State: up, down (a quorum sees it down), held (flapping: out until
	// seen up for the hold) or over_budget (a quorum sees it down, but the
	// ejection budget keeps it in). DownVotes of Voters (live nodes that
	// have checked it) see it down now.
	State     string     `json:"state"`
	DownVotes int        `json:"down_votes"`
	Voters    int        `json:"voters"`
	Strikes   int        `json:"strikes"`
	HoldUntil *time.Time `json:"hold_until,omitempty"`
	DecidedBy string     `json:"decided_by,omitempty"`
}

// ObservationStatus is one node's own view of a backend.
type ObservationStatus struct {
	Node   string    `json:"node"`
	State  string    `json:"state"` // up or down
	Detail string    `json:"detail,omitempty"`
	Since  time.Time `json:"since"`
	// Live is false for a node that is no longer a member: its vote no
	// longer counts.
	Live bool `json:"live"`
}

// healthView is what backendStatus needs, read once per request.
type healthView struct {
	verdicts map[string]gossip.Verdict
	obs      map[string][]gossip.Observation
	live     map[string]bool
}

func (n *Node) healthView() healthView {
	hv := healthView{verdicts: n.cluster.Verdicts(), obs: map[string][]gossip.Observation{}, live: map[string]bool{}}
	for _, o := range n.cluster.Observations() {
		hv.obs[o.ID] = append(hv.obs[o.ID], o)
	}
	for _, m := range n.cluster.Members() {
		if m.MetaErr == nil && m.Meta.State != gossip.NodeLeaving {
			hv.live[m.Name] = true
		}
	}
	return hv
}

// tally counts the live votes on one backend now.
func (hv healthView) tally(id string) (votes, voters int) {
	for _, o := range hv.obs[id] {
		if hv.live[o.Node] {
			voters++
			if !o.Up {
				votes++
			}
		}
	}
	return votes, voters
}

// reason explains a backend's effective state in words; votes and voters
// are the live count.
func (n *Node) reason(rec gossip.Record, v gossip.Verdict, votes, voters int) string {
	switch rec.State {
	case gossip.StateDraining:
		return "drained by an operator: keeps its sessions, takes no new ones"
	case gossip.StateRemoved:
		return "removed by an operator"
	}
	switch v.Reason {
	case gossip.VerdictDown:
		return fmt.Sprintf("%d of %d nodes see it down", votes, voters)
	case gossip.VerdictHeld:
		hold := n.cfg.HealthPolicy.Hold(int(v.Strikes))
		if v.UpSince != 0 {
			return fmt.Sprintf("flapping (%d ejections): held out until seen up for %v", v.Strikes, hold)
		}
		return fmt.Sprintf("flapping (%d ejections) and %d of %d nodes see it down: held out, then %v of being up", v.Strikes, votes, voters, hold)
	case gossip.VerdictOverBudget:
		return fmt.Sprintf("%d of %d nodes see it down, kept in: the ejection budget (%d%%) is spent", votes, voters, n.cfg.HealthPolicy.MaxEjectPercent)
	}
	if votes > 0 {
		return fmt.Sprintf("healthy: %d of %d nodes see it down, short of a quorum", votes, voters)
	}
	return "healthy"
}

func (n *Node) fillHealth(b *BackendStatus, rec gossip.Record, hv healthView) {
	v, judged := hv.verdicts[rec.ID]
	votes, voters := hv.tally(rec.ID)
	b.EffectiveState = effectiveState(rec, v)
	b.Reason = n.reason(rec, v, votes, voters)
	b.LastChange = b.Updated
	b.Observations = []ObservationStatus{}
	if judged && rec.State != gossip.StateRemoved {
		h := &BackendHealth{State: v.Reason.String(), DownVotes: votes, Voters: voters, Strikes: int(v.Strikes), DecidedBy: v.Origin}
		if v.Reason == gossip.VerdictHeld && v.UpSince != 0 {
			until := time.UnixMilli(int64(v.UpSince)).Add(n.cfg.HealthPolicy.Hold(int(v.Strikes))).UTC()
			h.HoldUntil = &until
		}
		b.Health = h
		if changed := time.UnixMilli(int64(v.Changed)).UTC(); v.Changed != 0 && changed.After(b.LastChange) {
			b.LastChange = changed
		}
	} else if rec.State != gossip.StateRemoved {
		b.Health = &BackendHealth{State: gossip.VerdictUp.String(), DownVotes: votes, Voters: voters}
	}
	for _, o := range hv.obs[rec.ID] {
		st := "up"
		if !o.Up {
			st = "down"
		}
		b.Observations = append(b.Observations, ObservationStatus{Node: o.Node, State: st, Detail: o.Detail, Since: o.Since().UTC(), Live: hv.live[o.Node]})
	}
}

// HealthStatus summarises health in /v1/status.
type HealthStatus struct {
	Decider string `json:"decider"`
	// Ejected backends are out of the ring for health, MaxEjected the
	// budget; OverBudget lists those a quorum sees down but the budget
	// keeps in.
	Ejected    int            `json:"ejected"`
	MaxEjected int            `json:"max_ejected"`
	OverBudget []string       `json:"over_budget"`
	Backends   map[string]int `json:"backends"` // count by effective state
}

func (n *Node) healthStatus() HealthStatus {
	hs := HealthStatus{Decider: health.Decider(n.cluster.Members()), OverBudget: []string{}, Backends: map[string]int{}}
	for _, s := range effectiveStates {
		hs.Backends[s] = 0
	}
	verdicts := n.cluster.Verdicts()
	active := 0
	for _, rec := range n.cluster.Records() {
		v := verdicts[rec.ID]
		st := effectiveState(rec, v)
		hs.Backends[st]++
		if rec.State != gossip.StateActive {
			continue
		}
		active++
		if st == stateUnhealthy {
			hs.Ejected++
		}
		if v.Reason == gossip.VerdictOverBudget {
			hs.OverBudget = append(hs.OverBudget, rec.ID)
		}
	}
	hs.MaxEjected = n.cfg.HealthPolicy.Allowed(active)
	return hs
}
