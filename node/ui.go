package node

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"time"

	"github.com/meshlb/meshlb/gossip"
)

// The dashboard at /ui/ on the admin address: a few embedded files (no
// CDN, no build step) that read one JSON document, the node's whole view
// of the mesh, from /ui/api/state and then once a second from the
// server-sent event stream /ui/api/stream. Its buttons call the admin
// API (drain, undrain, remove), under whatever guards the admin mux.

//go:embed ui
var uiFiles embed.FS

// uiPush is how often the stream sends the state: a second is what an
// operator watching an incident expects, and what a summary (2 s) and a
// rebuild (coalesced) need to show.
const uiPush = time.Second

// uiState is the dashboard's document.
type uiState struct {
	Node     string          `json:"node"`
	Now      time.Time       `json:"now"`
	Status   Status          `json:"status"`
	Backends []BackendStatus `json:"backends"`
	Ring     uiRing          `json:"ring"`
	Mesh     MeshView        `json:"mesh"`
	Events   []Event         `json:"events"`
	Rates    []rateSample    `json:"rates"`
	// AccessLog reports the access log's counts, when it is on.
	AccessLog *accessLogStatus `json:"access_log,omitempty"`
}

// uiRing is the ring drawn as a circle of len(Owners) sectors, sector i
// drawn in the color of Members[Owners[i]].
type uiRing struct {
	Fingerprint string             `json:"fingerprint"`
	Partitions  int                `json:"partitions"`
	Members     []string           `json:"members"`
	Owners      []int              `json:"owners"`
	Shares      map[string]float64 `json:"shares"` // fraction of the partitions
}

// ringSectors is the most a drawing shows: one sector a degree. A ring
// has tens of thousands of partitions, too many to send each second and
// to draw, and thinner than a pixel anyway.
const ringSectors = 360

// ringSectorsOf folds parts partitions (partition p owned by member
// owner(p) of n) into at most ringSectors sectors, each given the member
// that owns most of its partitions (the lower index on a tie): a
// member's arc grows and shrinks with its share, and an ejected one
// vanishes.
func ringSectorsOf(parts, n int, owner func(p int) int) []int {
	sectors := min(parts, ringSectors)
	out := make([]int, sectors)
	count := make([]int, n)
	for s := range sectors {
		clear(count)
		for p := s * parts / sectors; p < (s+1)*parts/sectors; p++ {
			if o := owner(p); o >= 0 && o < n {
				count[o]++
			}
		}
		best := 0
		for i, c := range count {
			if c > count[best] {
				best = i
			}
		}
		out[s] = best
	}
	return out
}

type accessLogStatus struct {
	Written int64 `json:"written"`
	Dropped int64 `json:"dropped"`
}

func (n *Node) uiState() uiState {
	s := uiState{Node: n.cfg.Name, Now: time.Now().UTC(), Status: n.Status(), Mesh: n.MeshView(),
		Events: n.obs.events.list(), Rates: n.obs.rates.samples()}
	recs := n.cluster.Records()
	hv := n.healthView()
	s.Backends = make([]BackendStatus, 0, len(recs))
	for _, rec := range recs {
		s.Backends = append(s.Backends, n.backendStatus(rec, hv))
	}
	s.Ring = uiRing{Members: []string{}, Owners: []int{}, Shares: map[string]float64{}}
	if t := n.table.Load(); t != nil {
		s.Ring.Fingerprint = fp(t.Fingerprint)
		s.Ring.Members = t.Ring.Members()
		idx := make(map[string]int, len(s.Ring.Members))
		for i, m := range s.Ring.Members {
			idx[m] = i
		}
		if t.Ring.Len() > 0 {
			parts := t.Ring.Partitions()
			s.Ring.Partitions = parts
			s.Ring.Owners = ringSectorsOf(parts, len(s.Ring.Members), func(p int) int { return idx[t.Ring.Owner(p)] })
		}
		// Each backend's share of its own pool's ring; the drawing is the
		// default pool's.
		for _, p := range t.Pools() {
			for id, k := range p.Ring.Loads() {
				s.Ring.Shares[id] = float64(k) / float64(p.Ring.Partitions())
			}
		}
	}
	if a := n.obs.access; a != nil {
		s.AccessLog = &accessLogStatus{Written: a.Written(), Dropped: a.Dropped()}
	}
	return s
}

// registerObserve adds the routes of this file's feature to the admin
// mux: the mesh view, undrain, the dashboard.
func (n *Node) registerObserve(mux *http.ServeMux) {
	mux.HandleFunc("/v1/mesh", only("GET", n.handleMesh))
	mux.HandleFunc("/v1/backends/{id}/undrain", only("POST", n.handleUndrainBackend))
	static, _ := fs.Sub(uiFiles, "ui") // the directory is embedded: no error
	files := http.StripPrefix("/ui/", http.FileServerFS(static))
	mux.HandleFunc("/ui/", only("GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("/ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/ui/api/state", only("GET", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, n.uiState())
	}))
	mux.HandleFunc("/ui/api/stream", only("GET", n.handleUIStream))
}

// handleUndrainBackend sets a drained backend active again.
func (n *Node) handleUndrainBackend(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if rec, ok := n.record(id); ok && rec.State == gossip.StateRemoved {
		writeError(w, http.StatusConflict, "backend "+id+" is removed; add it again with POST /v1/backends")
		return
	}
	n.setBackendState(w, r, gossip.StateActive)
}

func (n *Node) record(id string) (gossip.Record, bool) {
	for _, r := range n.cluster.Records() {
		if r.ID == id {
			return r, true
		}
	}
	return gossip.Record{}, false
}

// handleUIStream sends the state as server-sent events every uiPush until
// the client goes or the node stops (before the admin server's Shutdown,
// which would otherwise wait on the stream).
func (n *Node) handleUIStream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	stop := n.obs.ctx
	if stop == nil {
		stop = context.Background()
	}
	t := time.NewTicker(uiPush)
	defer t.Stop()
	for {
		b, err := json.Marshal(n.uiState())
		if err != nil {
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second)) // a stalled reader is let go
		if _, err := w.Write([]byte("data: ")); err != nil {
			return
		}
		_, _ = w.Write(b)
		if _, err := w.Write([]byte("\n\n")); err != nil {
			return
		}
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-stop.Done():
			return
		case <-t.C:
		}
	}
}
