package node

import (
	"fmt"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
)

// The admin API's and the metrics' view of health: what the replicated
// verdicts and observations say about each backend. The decisions are
// health's (health.Decider); this file only reads them.

// Effective states of a backend, as the admin API and metrics name them.
const (
	stateActive    = "active"    // on the ring
	stateDraining  = "draining"  // drained by an operator
	stateUnhealthy = "unhealthy" // out of the ring for health (down or held)
	stateRemoved   = "removed"   // removed by an operator (a tombstone)
)

var effectiveStates = []string{stateActive, stateDraining, stateUnhealthy, stateRemoved}

// effectiveState names what the mesh does with a backend.
func effectiveState(rec gossip.Record, v health.Verdict) string {
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
	verdicts map[string]health.Verdict
	obs      map[string][]health.Observation
	members  []health.Member
	live     map[string]bool
}

func (n *Node) healthView() healthView {
	hv := healthView{verdicts: replicaVerdicts(n.cluster), obs: map[string][]health.Observation{},
		members: liveMembers(n.cluster.Members()), live: map[string]bool{}}
	for _, o := range replicaObservations(n.cluster) {
		hv.obs[o.ID] = append(hv.obs[o.ID], o)
	}
	for _, m := range hv.members {
		hv.live[m.Name] = true
	}
	return hv
}

// tally counts the live votes on one backend now, by health's rule.
func (hv healthView) tally(id string) (votes, voters int) {
	t := health.Count(hv.members, hv.obs[id], []string{id}, nil)[0]
	return t.Votes, t.Voters
}

// reason explains a backend's effective state in words; votes and voters
// are the live count.
func (n *Node) reason(rec gossip.Record, v health.Verdict, votes, voters int) string {
	switch rec.State {
	case gossip.StateDraining:
		return "drained by an operator: keeps its sessions, takes no new ones"
	case gossip.StateRemoved:
		return "removed by an operator"
	}
	switch v.Reason {
	case health.VerdictDown:
		return fmt.Sprintf("%d of %d nodes see it down", votes, voters)
	case health.VerdictHeld:
		hold := n.cfg.HealthPolicy.Hold(int(v.Strikes))
		if v.UpSince != 0 {
			return fmt.Sprintf("flapping (%d ejections): held out until seen up for %v", v.Strikes, hold)
		}
		return fmt.Sprintf("flapping (%d ejections) and %d of %d nodes see it down: held out, then %v of being up", v.Strikes, votes, voters, hold)
	case health.VerdictOverBudget:
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
		if v.Reason == health.VerdictHeld && v.UpSince != 0 {
			until := time.UnixMilli(int64(v.UpSince)).Add(n.cfg.HealthPolicy.Hold(int(v.Strikes))).UTC()
			h.HoldUntil = &until
		}
		b.Health = h
		if changed := time.UnixMilli(int64(v.Changed)).UTC(); v.Changed != 0 && changed.After(b.LastChange) {
			b.LastChange = changed
		}
	} else if rec.State != gossip.StateRemoved {
		b.Health = &BackendHealth{State: health.VerdictUp.String(), DownVotes: votes, Voters: voters}
	}
	for _, o := range hv.obs[rec.ID] {
		st := "up"
		if !o.Up {
			st = "down"
		}
		b.Observations = append(b.Observations, ObservationStatus{Node: o.Node, State: st, Detail: o.Detail, Since: o.Since.UTC(), Live: hv.live[o.Node]})
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
	hs := HealthStatus{Decider: health.DeciderOf(liveMembers(n.cluster.Members())), OverBudget: []string{}, Backends: map[string]int{}}
	for _, s := range effectiveStates {
		hs.Backends[s] = 0
	}
	verdicts := replicaVerdicts(n.cluster)
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
		if v.Reason == health.VerdictOverBudget {
			hs.OverBudget = append(hs.OverBudget, rec.ID)
		}
	}
	hs.MaxEjected = n.cfg.HealthPolicy.Allowed(active)
	return hs
}
