package demo

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/node"
)

//go:embed page.html
var page []byte

// MeshConfig places the demo mesh: node i listens on BasePort+i (proxy),
// BasePort+100+i (admin) and BasePort+200+i (gossip); backend j on
// BasePort+300+j; the page on BasePort+400.
type MeshConfig struct {
	Host     string // default 127.0.0.1
	BasePort int    // default 18000
	Nodes    int    // default 3
	Backends int    // default 3
	Logger   zerolog.Logger
	// NodeConfig, if set, edits each node's config before it starts.
	NodeConfig func(*node.Config)
}

// Mesh is a demo mesh of nodes and echo backends in one process, with a
// page to watch sessions stick and controls to stop and start its parts.
type Mesh struct {
	cfg      MeshConfig
	mu       sync.Mutex
	nodes    []*meshNode
	backends []*meshBackend
	page     *http.Server
	pageLn   net.Listener
	wg       sync.WaitGroup
}

type meshNode struct {
	name               string
	proxy, admin, goss string
	n                  *node.Node // nil while stopped
	restart            bool       // started before
}

type meshBackend struct {
	id, addr string
	e        *Echo // nil while stopped
}

// StartMesh starts the backends, the nodes (the first is the seed) and the
// page.
func StartMesh(cfg MeshConfig) (*Mesh, error) {
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.BasePort == 0 {
		cfg.BasePort = 18000
	}
	if cfg.Nodes <= 0 {
		cfg.Nodes = 3
	}
	if cfg.Backends <= 0 {
		cfg.Backends = 3
	}
	if cfg.Nodes > 99 || cfg.Backends > 99 || cfg.BasePort < 1 || cfg.BasePort+400 > 65535 {
		return nil, errors.New("demo: at most 99 nodes and backends, and ports must fit below 65536")
	}
	m := &Mesh{cfg: cfg}
	hp := func(port int) string { return net.JoinHostPort(cfg.Host, strconv.Itoa(port)) }
	for j := range cfg.Backends {
		m.backends = append(m.backends, &meshBackend{id: fmt.Sprintf("web-%d", j+1), addr: hp(cfg.BasePort + 300 + j)})
	}
	for i := range cfg.Nodes {
		m.nodes = append(m.nodes, &meshNode{name: fmt.Sprintf("node-%c", 'a'+i), proxy: hp(cfg.BasePort + i), admin: hp(cfg.BasePort + 100 + i), goss: hp(cfg.BasePort + 200 + i)})
	}
	for _, b := range m.backends {
		if err := m.startBackend(b); err != nil {
			m.Shutdown(context.Background())
			return nil, err
		}
	}
	for _, n := range m.nodes {
		if err := m.startNode(n); err != nil {
			m.Shutdown(context.Background())
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", hp(cfg.BasePort+400))
	if err != nil {
		m.Shutdown(context.Background())
		return nil, fmt.Errorf("demo page: %w", err)
	}
	m.pageLn = ln
	m.page = &http.Server{Handler: m.handler(), ReadHeaderTimeout: 5 * time.Second}
	m.wg.Go(func() { _ = m.page.Serve(ln) })
	return m, nil
}

func (m *Mesh) startBackend(b *meshBackend) error {
	e := &Echo{ID: b.id, Logger: m.cfg.Logger}
	if err := e.Start(b.addr); err != nil {
		return err
	}
	b.e = e
	return nil
}

func (m *Mesh) startNode(mn *meshNode) error {
	g := gossip.LocalConfig()
	g.BindAddr = mn.goss
	if mn != m.nodes[0] {
		g.Seeds = []string{m.nodes[0].goss}
	} else if mn.restart {
		// The seed re-joins the others when it restarts.
		for _, o := range m.nodes[1:] {
			g.Seeds = append(g.Seeds, o.goss)
		}
	}
	cfg := node.Config{
		Name:       mn.name,
		ListenAddr: mn.proxy,
		AdminAddr:  mn.admin,
		Gossip:     g,
		Logger:     m.cfg.Logger,
	}
	for _, b := range m.backends {
		cfg.Backends = append(cfg.Backends, node.BackendSpec{ID: b.id, Addr: b.addr})
	}
	if m.cfg.NodeConfig != nil {
		m.cfg.NodeConfig(&cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(context.Background()); err != nil {
		return err
	}
	mn.n = n
	mn.restart = true
	return nil
}

// PageURL is the address of the demo page.
func (m *Mesh) PageURL() string { return "http://" + m.pageLn.Addr().String() + "/" }

// NodeProxies are the proxy addresses of the nodes, in order.
func (m *Mesh) NodeProxies() []string {
	out := make([]string, len(m.nodes))
	for i, n := range m.nodes {
		out[i] = n.proxy
	}
	return out
}

// NodeAdmins are the admin addresses of the nodes, in order.
func (m *Mesh) NodeAdmins() []string {
	out := make([]string, len(m.nodes))
	for i, n := range m.nodes {
		out[i] = n.admin
	}
	return out
}

// ShutdownTimeout is the deadline Shutdown needs to stop the nodes without
// cutting their drain or their leave; they stop in parallel.
func (m *Mesh) ShutdownTimeout() time.Duration {
	var cfg node.Config
	if m.cfg.NodeConfig != nil {
		m.cfg.NodeConfig(&cfg)
	}
	return cfg.ShutdownTimeout()
}

// Shutdown stops the page, the nodes (gracefully) and the backends.
func (m *Mesh) Shutdown(ctx context.Context) error {
	var errs []error
	if m.page != nil {
		errs = append(errs, m.page.Shutdown(ctx))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, n := range m.nodes {
		if n.n != nil {
			wg.Go(func() {
				err := n.n.Shutdown(ctx)
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			})
		}
	}
	wg.Wait()
	for _, n := range m.nodes {
		n.n = nil
	}
	for _, b := range m.backends {
		if b.e != nil {
			errs = append(errs, b.e.Shutdown(ctx))
			b.e = nil
		}
	}
	m.wg.Wait()
	return errors.Join(errs...)
}

type partState struct {
	Name  string `json:"name"`
	Addr  string `json:"addr"`
	Admin string `json:"admin,omitempty"`
	Up    bool   `json:"up"`
}

func (m *Mesh) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	mux.HandleFunc("GET /api/state", func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		var st struct {
			Nodes    []partState `json:"nodes"`
			Backends []partState `json:"backends"`
		}
		for _, n := range m.nodes {
			st.Nodes = append(st.Nodes, partState{Name: n.name, Addr: n.proxy, Admin: n.admin, Up: n.n != nil})
		}
		for _, b := range m.backends {
			st.Backends = append(st.Backends, partState{Name: b.id, Addr: b.addr, Up: b.e != nil})
		}
		m.mu.Unlock()
		sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Name < st.Nodes[j].Name })
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("POST /api/{kind}/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		// Only the page's own fetch sets this header: a form on another
		// site can't, so it can't stop the demo's nodes.
		if r.Header.Get("X-Meshlb-Demo") != "1" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]string{"error": "missing X-Meshlb-Demo header"})
			return
		}
		if err := m.control(r.Context(), r.PathValue("kind"), r.PathValue("name"), r.PathValue("action")); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// control stops or starts one node or backend.
func (m *Mesh) control(ctx context.Context, kind, name, action string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch kind {
	case "nodes":
		for _, n := range m.nodes {
			if n.name != name {
				continue
			}
			switch {
			case action == "stop" && n.n != nil:
				sctx, cancel := context.WithTimeout(ctx, m.ShutdownTimeout())
				defer cancel()
				err := n.n.Shutdown(sctx)
				n.n = nil
				return err
			case action == "start" && n.n == nil:
				return m.startNode(n)
			}
			return fmt.Errorf("node %s: can't %s it now", name, action)
		}
	case "backends":
		for _, b := range m.backends {
			if b.id != name {
				continue
			}
			switch {
			case action == "stop" && b.e != nil:
				err := b.e.Shutdown(ctx)
				b.e = nil
				return err
			case action == "start" && b.e == nil:
				return m.startBackend(b)
			}
			return fmt.Errorf("backend %s: can't %s it now", name, action)
		}
	}
	return fmt.Errorf("no %s named %q", kind, name)
}
