package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/internal/logx"
	"github.com/meshlb/meshlb/meshdns"
	"github.com/meshlb/meshlb/ring"
)

// maxAdminBody bounds admin request bodies; a backend is a few dozen bytes.
const maxAdminBody = 64 << 10

func (n *Node) adminHandler() http.Handler {
	mux := http.NewServeMux()
	// Methods are dispatched in the handlers rather than in the patterns so
	// that a wrong method gets a JSON 405 like every other error.
	mux.HandleFunc("/healthz", only("GET", n.handleHealthz))
	mux.HandleFunc("/readyz", only("GET", n.handleReadyz))
	mux.HandleFunc("/v1/status", only("GET", n.handleStatus))
	mux.HandleFunc("/v1/route", only("GET", n.handleRoute))
	mux.HandleFunc("/v1/backends", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			n.handleListBackends(w, r)
		case http.MethodPost:
			n.handleAddBackend(w, r)
		default:
			methodNotAllowed(w, "GET, POST")
		}
	})
	mux.HandleFunc("/v1/backends/{id}", only("DELETE", n.handleRemoveBackend))
	mux.HandleFunc("/v1/backends/{id}/drain", only("POST", n.handleDrainBackend))
	mux.HandleFunc("/v1/keys", n.handleKeys) // keys.go; write role only (auth.go)
	n.registerObserve(mux)
	mux.Handle("/metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{ErrorLog: newStdLogger(n.log, "metrics")}))
	if n.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
	return mux
}

func only(method string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			methodNotAllowed(w, method)
			return
		}
		h(w, r)
	}
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed; use "+allow)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to do
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (n *Node) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (n *Node) handleReadyz(w http.ResponseWriter, _ *http.Request) {
	if ok, reason := n.Ready(); !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "error": "not ready: " + reason, "reason": reason})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// MemberStatus is one live node as this node sees it.
type MemberStatus struct {
	Name              string `json:"name"`
	GossipAddr        string `json:"gossip_addr"`
	ProxyAddr         string `json:"proxy_addr"`
	AdminAddr         string `json:"admin_addr"`
	State             string `json:"state"`
	Ready             bool   `json:"ready"` // as its meta says (true for a node of the release before)
	RingFingerprint   string `json:"ring_fingerprint"`
	ConfigFingerprint string `json:"config_fingerprint"`
	Error             string `json:"error,omitempty"`
	// Suspect: a probe of it went unanswered and the mesh waits for it to
	// refute the suspicion before declaring it failed.
	Suspect bool `json:"suspect,omitempty"`
}

// FailedMemberStatus is a member in Status.FailedMembers.
type FailedMemberStatus struct {
	Name       string    `json:"name"`
	GossipAddr string    `json:"gossip_addr"`
	Since      time.Time `json:"since"`
}

// RingStatus describes the rings this node routes with, one a pool.
// Fingerprint covers them all (it is what members compare); Backends
// counts the backends of every pool.
type RingStatus struct {
	Fingerprint string       `json:"fingerprint"`
	Backends    int          `json:"backends"`
	Partitions  int          `json:"partitions"`
	BuiltAt     time.Time    `json:"built_at"`
	Error       string       `json:"error,omitempty"`
	Pools       []PoolStatus `json:"pools"`
}

// PoolStatus is one pool's ring: the default pool always, and every pool
// with backends on its ring.
type PoolStatus struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
	Backends    int    `json:"backends"`
}

// Status is the answer of GET /v1/status.
type Status struct {
	Node              string         `json:"node"`
	Ready             bool           `json:"ready"`
	Reason            string         `json:"reason,omitempty"`
	ConfigFingerprint string         `json:"config_fingerprint"`
	Members           []MemberStatus `json:"members"`
	// FailedMembers went away without leaving (a crash or a partition) and
	// have not come back; they are tried again, and forgotten after a day.
	FailedMembers []FailedMemberStatus `json:"failed_members"`
	Ring          RingStatus           `json:"ring"`
	// RingAgreed: every live, non-leaving member reports this node's ring
	// fingerprint. ConfigAgreed: the same for the config fingerprint.
	RingAgreed   bool         `json:"ring_agreed"`
	ConfigAgreed bool         `json:"config_agreed"`
	Health       HealthStatus `json:"health"`
	// DNS is the answer set this node's DNS server gives, when it has one.
	DNS *meshdns.Status `json:"dns,omitempty"`
	TLS *TLSStatus      `json:"tls,omitempty"`
}

// Status reports the node's view of the mesh.
func (n *Node) Status() Status {
	s := Status{Node: n.cfg.Name, ConfigFingerprint: fp(n.configFP.Load()), RingAgreed: true, ConfigAgreed: true}
	s.Ready, s.Reason = n.Ready()
	s.Health = n.healthStatus()
	if n.dns != nil {
		st := n.dns.Status()
		s.DNS = &st
	}
	s.TLS = n.tlsStatus()
	s.Ring.Pools = []PoolStatus{}
	t := n.table.Load()
	var ringFP uint64
	if t != nil {
		ringFP = t.Fingerprint
		s.Ring = RingStatus{Fingerprint: fp(t.Fingerprint), Backends: t.Backends(), Partitions: t.Ring.Partitions(), BuiltAt: t.Built.UTC(), Pools: s.Ring.Pools}
		for _, p := range t.Pools() {
			s.Ring.Pools = append(s.Ring.Pools, PoolStatus{Name: p.Name, Fingerprint: fp(p.Fingerprint), Backends: p.Ring.Len()})
		}
	}
	if err := n.lastBuildErr(); err != nil {
		s.Ring.Error = err.Error()
	}
	suspects := n.cluster.Suspects()
	s.FailedMembers = []FailedMemberStatus{}
	for _, f := range n.cluster.Failed() {
		s.FailedMembers = append(s.FailedMembers, FailedMemberStatus{Name: f.Name, GossipAddr: f.Addr, Since: f.Since.UTC()})
	}
	for _, m := range n.cluster.Members() {
		ms := MemberStatus{Name: m.Name, GossipAddr: m.Addr, Suspect: suspects[m.Name]}
		if m.MetaErr != nil {
			ms.State = "unknown"
			ms.Error = m.MetaErr.Error()
			s.RingAgreed, s.ConfigAgreed = false, false
			s.Members = append(s.Members, ms)
			continue
		}
		if m.Name == n.cfg.Name {
			// Our meta announces the ring a little after the swap (see
			// rebuildLoop); our own view is the ring in use now.
			m.Meta.RingFP = ringFP
		}
		ms.ProxyAddr, ms.AdminAddr = m.Meta.ProxyAddr, m.Meta.AdminAddr
		ms.State = m.Meta.State.String()
		ms.Ready = m.Meta.Ready || m.Meta.ReadyUnknown
		ms.RingFingerprint, ms.ConfigFingerprint = fp(m.Meta.RingFP), fp(m.Meta.ConfigFP)
		if live(m) {
			if m.Meta.RingFP != ringFP || ringFP == 0 {
				s.RingAgreed = false
			}
			if m.Meta.ConfigFP != n.configFP.Load() {
				s.ConfigAgreed = false
			}
		}
		s.Members = append(s.Members, ms)
	}
	return s
}

func (n *Node) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, n.Status())
}

// RouteAnswer is the answer of GET /v1/route.
type RouteAnswer struct {
	Key string `json:"key"`
	// Pool is the pool asked (pool=), or the one the node's routes pick
	// for host= and path=; the default pool without any of them.
	Pool        string `json:"pool"`
	Backend     string `json:"backend"`
	Addr        string `json:"addr"`
	Partition   int    `json:"partition"`
	Fingerprint string `json:"fingerprint"`
	// ChosenBy is "cookie" when the cookie= given pins the backend, else
	// "ring"; CookieError says why a cookie given is not honoured.
	ChosenBy    string `json:"chosen_by"`
	CookieError string `json:"cookie_error,omitempty"`
}

func (n *Node) handleRoute(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("key") {
		writeError(w, http.StatusBadRequest, "missing query parameter key")
		return
	}
	key := q.Get("key")
	pool := q.Get("pool")
	switch {
	case pool != "" && (q.Has("host") || q.Has("path")):
		writeError(w, http.StatusBadRequest, "give pool, or host and path for the routes to pick one, not both")
		return
	case pool != "":
		if err := gossip.ValidatePool(pool); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	case n.router != nil:
		pool = n.router.Pool(q.Get("host"), q.Get("path"))
	default:
		pool = gossip.DefaultPool
	}
	tt := n.table.Load()
	if tt == nil {
		writeError(w, http.StatusServiceUnavailable, "no ring yet")
		return
	}
	t := tt.Pool(pool)
	if t == nil {
		msg := "no backends"
		if pool != gossip.DefaultPool {
			msg = "no backends in pool " + pool
		}
		writeError(w, http.StatusServiceUnavailable, msg)
		return
	}
	rt, err := t.Locate([]byte(key))
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	a := RouteAnswer{Key: key, Pool: pool, Backend: rt.Backend, Addr: rt.Addr, Partition: rt.Partition, Fingerprint: fp(tt.Fingerprint), ChosenBy: "ring"}
	if ids, ramped := t.rampOrder([]byte(key), t.Ring.Candidates([]byte(key), 1+rampExtra), n.cfg.SlowStart, time.Now()); ramped {
		a.Backend, a.ChosenBy = ids[0], "slow_start"
		a.Addr, _ = t.Addr(ids[0])
	}
	if q.Has("cookie") {
		if b, why := n.explainAffinity(pool, q.Get("cookie")); why != "" {
			a.CookieError = why
		} else {
			a.Backend, a.Addr, a.ChosenBy = b.ID, b.Addr, "cookie"
		}
	}
	writeJSON(w, http.StatusOK, a)
}

// BackendStatus is one catalog entry as the admin API shows it.
type BackendStatus struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Weight int    `json:"weight"`
	Pool   string `json:"pool"`
	// State is the admin state (active, draining, removed); EffectiveState
	// is what the mesh does with the backend: active (on the ring),
	// draining, unhealthy (out for health) or removed; Reason says why.
	State          string `json:"state"`
	EffectiveState string `json:"effective_state"`
	Reason         string `json:"reason"`
	InRing         bool   `json:"in_ring"`
	// LocalView is this node's own check of the backend: up, down, or
	// unchecked (no determination yet).
	LocalView string    `json:"local_view"`
	Version   uint64    `json:"version"`
	Origin    string    `json:"origin"`
	Updated   time.Time `json:"updated"`
	// LastChange is the last change of the effective state.
	LastChange time.Time `json:"last_change"`
	// Sessions is the backend's open WebSockets summed over the live
	// nodes, from their load summaries (a few seconds old at most); only
	// in the list.
	Sessions     int64               `json:"sessions"`
	Health       *BackendHealth      `json:"health,omitempty"`
	Observations []ObservationStatus `json:"observations"`
}

func (n *Node) backendStatus(rec gossip.Record, hv healthView) BackendStatus {
	b := BackendStatus{ID: rec.ID, Addr: rec.Addr, Weight: rec.Weight, Pool: poolOf(rec), State: rec.State.String(), Version: rec.Version, Origin: rec.Origin,
		Updated: time.UnixMilli(int64(rec.Version >> 16)).UTC()}
	if t := n.table.Load(); t != nil {
		if p := t.Pool(poolOf(rec)); p != nil {
			a, ok := p.Addr(rec.ID)
			b.InRing = ok && a == rec.Addr
		}
	}
	switch v := n.checker.View(rec.ID); {
	case !v.Checked:
		b.LocalView = "unchecked"
	case v.Up:
		b.LocalView = "up"
	default:
		b.LocalView = "down"
	}
	n.fillHealth(&b, rec, hv)
	return b
}

func (n *Node) handleListBackends(w http.ResponseWriter, _ *http.Request) {
	recs := n.cluster.Records()
	hv := n.healthView()
	open := n.MeshView().Backends
	out := make([]BackendStatus, 0, len(recs))
	for _, rec := range recs {
		b := n.backendStatus(rec, hv)
		b.Sessions = open[rec.ID]
		out = append(out, b)
	}
	writeJSON(w, http.StatusOK, map[string]any{"backends": out})
}

type addBackendRequest struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Weight *int   `json:"weight"` // absent means 1
	Pool   string `json:"pool"`   // absent means the default pool
}

func (n *Node) handleAddBackend(w http.ResponseWriter, r *http.Request) {
	var req addBackendRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "body must be JSON {\"id\": \"...\", \"addr\": \"host:port\"}: "+err.Error())
		return
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "body must hold exactly one JSON object")
		return
	}
	req.ID, req.Addr = strings.TrimSpace(req.ID), strings.TrimSpace(req.Addr)
	if req.ID == "" {
		req.ID = DefaultBackendID(req.Addr)
	}
	if err := validateBackendAddr(req.Addr); err != nil {
		writeError(w, http.StatusBadRequest, "addr: "+err.Error())
		return
	}
	// Every node refuses to dial such an address anyway (guard.go); the
	// node taking the request refuses it outright.
	if err := n.guard.checkAddr(r.Context(), req.Addr); err != nil {
		writeError(w, http.StatusBadRequest, "addr: "+err.Error())
		return
	}
	if err := ring.ValidateID(req.ID); err != nil {
		writeError(w, http.StatusBadRequest, "id: "+err.Error())
		return
	}
	weight := 1
	if req.Weight != nil {
		weight = *req.Weight
	}
	req.Pool = strings.TrimSpace(req.Pool)
	if req.Pool == "" {
		req.Pool = gossip.DefaultPool
	}
	if err := gossip.ValidatePool(req.Pool); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := n.checkWeight(req.ID, req.Pool, weight); err != nil {
		writeError(w, http.StatusBadRequest, "weight: "+err.Error())
		return
	}
	if err := n.checkCapacity(req.ID, req.Pool); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	rec, err := n.cluster.UpsertBackend(req.ID, req.Addr, weight, req.Pool)
	if errors.Is(err, gossip.ErrClosed) {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	} else if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	n.log.Info().Str("backend", rec.ID).Str("addr", rec.Addr).Int("weight", rec.Weight).Str("pool", rec.Pool).Msg("backend added")
	writeJSON(w, http.StatusOK, n.backendStatus(rec, n.healthView()))
}

// checkWeight refuses a weight the ring can't build with: out of range,
// or past the weighted vnode budget.
func (n *Node) checkWeight(id, pool string, w int) error {
	if err := ring.ValidateWeight(w); err != nil {
		return err
	}
	if w == 1 {
		return nil
	}
	total := w
	for _, r := range n.cluster.Records() {
		if r.State == gossip.StateActive && r.ID != id && poolOf(r) == pool {
			total += r.Weight
		}
	}
	return ring.CheckWeightedCapacity(n.cfg.Ring, total)
}

// checkCapacity refuses an addition that no node could build pool's ring
// for: accepted, it would freeze every node on its previous rings.
func (n *Node) checkCapacity(id, pool string) error {
	active := 0
	for _, r := range n.cluster.Records() {
		if r.State == gossip.StateActive && r.ID != id && poolOf(r) == pool {
			active++
		}
	}
	if err := ring.CheckCapacity(n.cfg.Ring, active+1); err != nil {
		return fmt.Errorf("the ring of pool %s can't take another backend: %w", pool, err)
	}
	return nil
}

func (n *Node) handleDrainBackend(w http.ResponseWriter, r *http.Request) {
	n.setBackendState(w, r, gossip.StateDraining)
}

func (n *Node) handleRemoveBackend(w http.ResponseWriter, r *http.Request) {
	n.setBackendState(w, r, gossip.StateRemoved)
}

// closeSessionsParams reads drain's and remove's close_sessions=true and
// spread=DURATION (default 0: at once).
func closeSessionsParams(r *http.Request) (close bool, spread time.Duration, err error) {
	q := r.URL.Query()
	switch v := q.Get("close_sessions"); v {
	case "", "false", "0":
	case "true", "1":
		close = true
	default:
		return false, 0, fmt.Errorf("close_sessions %q: want true or false", v)
	}
	if v := q.Get("spread"); v != "" {
		if !close {
			return false, 0, errors.New("spread: only with close_sessions=true")
		}
		if spread, err = time.ParseDuration(v); err != nil || spread < 0 || spread > MaxCloseSpread {
			return false, 0, fmt.Errorf("spread %q: want a duration from 0s to %v", v, MaxCloseSpread)
		}
	}
	return close, spread, nil
}

func (n *Node) setBackendState(w http.ResponseWriter, r *http.Request, st gossip.State) {
	id := r.PathValue("id")
	closeAll, spread, err := closeSessionsParams(r)
	if err == nil && closeAll && st == gossip.StateActive {
		err = errors.New("close_sessions: only with drain or remove")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rec, err := n.cluster.SetState(id, st)
	switch {
	case errors.Is(err, gossip.ErrUnknownBackend):
		writeError(w, http.StatusNotFound, "no such backend: "+id)
		return
	case errors.Is(err, gossip.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	n.log.Info().Str("backend", rec.ID).Str("state", rec.State.String()).Bool("close_sessions", closeAll).Msg("backend state changed")
	if closeAll {
		// After the state change, so no node routes a reconnect back to it.
		if err := n.requestCloseSessions(rec.ID, spread); err != nil {
			writeError(w, http.StatusServiceUnavailable, "backend "+rec.State.String()+", but its sessions were not closed: "+err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, n.backendStatus(rec, n.healthView()))
}

// newStdLogger routes net/http's internal error log into zerolog.
func newStdLogger(l zerolog.Logger, component string) *log.Logger {
	// Sampled: a client can make net/http write these at will (a failed
	// TLS handshake on the admin port is one line each).
	l = l.With().Str("component", component).Logger().Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second})
	return logx.StdLogger(l, zerolog.WarnLevel, "http server error")
}
