package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
	"github.com/meshlb/meshlb/meshdns"
	"github.com/meshlb/meshlb/ring"
	"github.com/meshlb/meshlb/router"
)

// Node is one meshlb node. Build it with New, run it with Start, stop it
// with Shutdown.
type Node struct {
	cfg      Config
	log      zerolog.Logger
	reg      *prometheus.Registry
	metrics  *metrics
	obs      *observer            // traffic metrics, access log, load summary, dashboard (traffic.go)
	affKeys  *router.AffinityKeys // nil unless the affinity cookie is on (affinity.go)
	cluster  *gossip.Cluster
	router   *router.Router
	checker  *health.Checker
	decider  *health.Decider
	guard    *dialGuard    // refuses backends that are our own listeners (guard.go)
	configFP atomic.Uint64 // ApplyRoutes changes it

	changes <-chan struct{} // the rebuild loop's subscription to gossip
	// meshChanges is meshLoop's subscription; dns answers DNS (nil: off).
	meshChanges <-chan struct{}
	dns         *meshdns.Server
	table       atomic.Pointer[Table]
	drift       atomic.Pointer[string] // why the config refuses traffic, or "" (drift.go)
	draining    atomic.Bool
	leaving     atomic.Bool // meta belongs to gossip's leave from here on
	metaMu      sync.Mutex  // serialises publishMeta with the leave

	mismatches sync.Map // peer/fingerprint pairs already logged by checkPeers
	started    atomic.Bool

	// swapHookForTest, when set before Start, sees every table swapped in.
	swapHookForTest func(*Table)

	mu       sync.Mutex // guards buildErr
	buildErr error

	tls *tlsServer // nil without a TLS listener (tls.go)
	sec security   // admin gate and TLS, keyring rotation (auth.go, keys.go)

	adminLn  net.Listener
	proxyLn  net.Listener
	adminSrv *http.Server
	proxySrv *http.Server

	cancel       context.CancelFunc
	wg           sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error
}

// New validates cfg and prepares a node. It opens no sockets and starts no
// goroutines.
func New(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	log := cfg.Logger.With().Str("node", cfg.Name).Logger()
	reg := prometheus.NewRegistry()
	cfg.Gossip.Logger = log
	cfg.Gossip.Registerer = reg
	configFP, err := configFingerprint(cfg)
	if err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	cfg.Gossip.Meta = gossip.Meta{Role: gossip.RoleBalancer, State: gossip.NodeActive, ConfigFP: configFP}
	cfg.Gossip.Kinds = replicatedKinds()
	cfg.Gossip.ValidateBackendID = ring.ValidateID
	if err := loadKeyring(&cfg, log); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	cluster, err := gossip.New(cfg.Gossip)
	if err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	n := &Node{
		cfg:     cfg,
		log:     log,
		reg:     reg,
		cluster: cluster,
		changes: cluster.Subscribe(),
		guard:   newDialGuard(cfg.BackendNetworks),

		meshChanges: cluster.Subscribe(),
	}
	n.configFP.Store(configFP)
	if cfg.DNS.Addr != "" {
		dcfg := cfg.DNS
		dcfg.Logger, dcfg.Registerer = log, reg
		if n.dns, err = meshdns.New(dcfg); err != nil {
			return nil, fmt.Errorf("node config: %w", err)
		}
	}
	rcfg := cfg.Router
	rcfg.MaxConns, _, _ = resolveMaxConns(cfg.Router.MaxConns)
	rcfg.DialGuard = n.guard.allow
	rcfg.Picker = picker{n}
	n.initAffinity(&rcfg)
	rcfg.Logger = log
	if rcfg.BackendTLS, err = cfg.BackendTLS.clientConfig(); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	n.obs = newObserver(reg)
	n.obs.hook(&rcfg, cfg.Name)
	onFailure := rcfg.OnFailure
	rcfg.OnFailure = func(b router.Backend, err error) {
		n.metrics.backendFailures.WithLabelValues(b.ID).Inc()
		n.checker.Passive(b.ID, err)
		if onFailure != nil {
			onFailure(b, err)
		}
	}
	onProxyError := rcfg.OnProxyError
	rcfg.OnProxyError = func(status int, reason string) {
		n.metrics.proxyErrors.WithLabelValues(strconv.Itoa(status), reason).Inc()
		if onProxyError != nil {
			onProxyError(status, reason)
		}
	}
	if n.router, err = router.New(rcfg); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	mesh := &gossipMesh{c: cluster, changes: cluster.Subscribe()}
	report := func(id string, up bool, detail string) {
		if err := mesh.Observe(health.Observation{ID: id, Up: up, Detail: detail}); err != nil {
			log.Warn().Err(err).Str("backend", id).Msg("publish health observation failed")
		}
	}
	hc := cfg.HealthCheck
	if hc.Dial == nil {
		hc.Dial = n.guard.healthDial()
	}
	if n.checker, err = health.NewChecker(hc, report, log); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	n.decider, err = health.NewDecider(health.DeciderConfig{
		Policy: cfg.HealthPolicy, Mesh: mesh, Checks: n.checker, Leaving: n.leaving.Load, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	n.metrics = newMetrics(n, reg)
	if cfg.TLS.Addr != "" {
		if n.tls, err = newTLSServer(cfg.TLS, cfg.ACME, log, reg); err != nil {
			return nil, fmt.Errorf("node config: %w", err)
		}
	}
	if err := n.initSecurity(); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	reg.MustRegister(trafficCollector{n.router})
	return n, nil
}

// configFingerprint covers every parameter that must be identical mesh-wide
// for nodes to route alike: the ring's, and how a request becomes a key.
// Trusted proxies are left out: they describe each node's own network.
func configFingerprint(cfg Config) (uint64, error) {
	k := cfg.Router.Key
	if k.SessionCookie == "" {
		k.SessionCookie = cfg.Router.SessionCookie
	}
	ke, err := router.NewKeyExtractor(k)
	if err != nil {
		return 0, err
	}
	d := xxhash.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], cfg.Ring.Fingerprint())
	d.Write(b[:])
	for _, s := range ke.Sources() {
		d.WriteString(s)
		d.Write([]byte{0})
	}
	fmt.Fprintf(d, "ipv6/%d", k.IPv6Prefix)
	// The health policy decides what is on the ring, so it must agree too;
	// the checks themselves are each node's own.
	p := cfg.HealthPolicy
	fmt.Fprintf(d, "\x00health/%d/%d/%d/%d/%d/%d", p.Quorum, p.MaxEjectPercent, p.FlapThreshold, p.FlapWindow, p.HoldBase, p.HoldMax)
	// Only when set, so that meshes without them keep their fingerprint.
	if a := cfg.Affinity; a.Cookie != "" {
		fmt.Fprintf(d, "\x00affinity/%s/%d", a.Cookie, a.MaxAge)
	}
	if cfg.SlowStart > 0 {
		fmt.Fprintf(d, "\x00slowstart/%d", cfg.SlowStart)
	}
	// Routes pick the pool, so nodes must agree on them as on the ring; in
	// the order the router tries them, so that an order of no consequence
	// in the config file does not split a mesh.
	pools := make([]string, 0, len(cfg.Router.PoolKeySources))
	for pool := range cfg.Router.PoolKeySources {
		pools = append(pools, pool)
	}
	slices.Sort(pools)
	for _, pool := range pools {
		pk := k
		pk.Sources = cfg.Router.PoolKeySources[pool]
		pke, err := router.NewKeyExtractor(pk)
		if err != nil {
			return 0, fmt.Errorf("key sources of pool %s: %w", pool, err)
		}
		fmt.Fprintf(d, "\x00poolkey/%s/%s", pool, strings.Join(pke.Sources(), "\x00"))
	}
	for _, r := range router.SortedRoutes(cfg.Router.Routes) {
		fmt.Fprintf(d, "\x00route/%d:%s/%d:%s/%s", len(r.Host), r.Host, len(r.Path), r.Path, r.Pool)
	}
	return d.Sum64(), nil
}

// Start binds every port (failing fast and naming the one that is taken),
// starts gossip and joins the seeds in the background, and serves the admin
// API. It returns once the node is serving; readiness follows when the node
// has a ring and has synced with the mesh.
func (n *Node) Start(ctx context.Context) (err error) {
	if n.started.Swap(true) {
		return errors.New("node already started")
	}
	defer func() {
		if err != nil {
			n.stopObserve()
			n.started.Store(false) // nothing runs: Shutdown has nothing to do
		}
	}()
	if err := n.openObserve(); err != nil {
		return err
	}
	if n.adminLn, err = listen(n.cfg.AdminAddr, "admin"); err != nil {
		return err
	}
	if n.proxyLn, err = listen(n.cfg.ListenAddr, "proxy"); err != nil {
		n.adminLn.Close()
		return err
	}
	n.adminLn, n.proxyLn = n.withReserve(n.adminLn, "admin"), n.withReserve(n.proxyLn, "proxy")
	if n.dns != nil {
		if err := n.dns.Start(); err != nil {
			n.adminLn.Close()
			n.proxyLn.Close()
			return err
		}
	}
	n.adminLn = n.secureAdminListener(n.adminLn)
	if n.cfg.ProxyProtocol {
		n.proxyLn = router.NewProxyProtocolListener(n.proxyLn, n.cfg.Router.Key.TrustedProxies, n.cfg.HandshakeTimeout)
	}
	if n.tls != nil {
		if err := n.startTLS(); err != nil {
			n.adminLn.Close()
			n.proxyLn.Close()
			return err
		}
	}
	acc := newAcceptor(n.proxyLn, n.router, n.cfg.HandshakeTimeout, n.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}))
	n.proxyLn = acc // serves upgrades itself, hands the rest to proxySrv
	if err := n.cluster.Start(ctx); err != nil {
		n.adminLn.Close()
		n.proxyLn.Close()
		if n.dns != nil {
			n.dns.Shutdown(ctx)
		}
		if n.tls != nil {
			n.tls.acc.Close()
		}
		return err
	}
	own := append([]string{n.ProxyAddr(), n.AdminAddr()}, gossipListeners(n.cfg.Gossip.BindAddr, n.GossipAddr())...)
	if n.dns != nil {
		own = append(own, n.dns.Addr())
	}
	if a := n.TLSAddr(); a != "" {
		own = append(own, a)
	}
	n.guard.setListeners(own...)
	if err := n.publishMeta(); err != nil {
		n.log.Error().Err(err).Msg("publish node meta failed")
	}

	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.startObserve(runCtx)
	n.adminSrv = &http.Server{
		Handler:           n.sec.gate.wrap(n.adminHandler()),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          newStdLogger(n.log, "admin"),
	}
	n.proxySrv = &http.Server{
		Handler:           n.router,
		ReadHeaderTimeout: n.cfg.HandshakeTimeout, // guardConn answers 408 at it
		// An idle keep-alive connection is closed after this; without it
		// net/http keeps one forever.
		IdleTimeout:    90 * time.Second,
		ConnState:      connState,
		MaxHeaderBytes: n.cfg.MaxHeaderBytes,
		ErrorLog:       newStdLogger(n.log, "proxy"),
	}
	if n.tls != nil {
		n.proxySrv.ConnContext = tlsConnContext
		n.proxySrv.Handler = n.acmeHTTP(withTLSState(n.router))
	}
	n.wg.Go(func() { n.serve(n.adminSrv, n.adminLn, "admin") })
	n.wg.Go(acc.run)
	n.wg.Go(func() { n.serve(n.proxySrv, n.proxyLn, "proxy") })
	// The first table is built here, so Table is never nil once Start
	// returns; the catalog is still empty, so this is quick.
	built := n.rebuild(time.Now())
	n.wg.Go(func() { n.rebuildLoop(runCtx, built) })
	n.wg.Go(func() { n.meshLoop(runCtx) })
	if err := n.decider.Start(runCtx); err != nil {
		return err
	}
	n.wg.Go(func() { n.upsertStatic(runCtx) })
	if n.tls != nil {
		n.serveTLS(runCtx)
	}
	n.wg.Go(func() { n.keyLoop(runCtx) })
	n.wg.Go(func() { n.affinityLoop(runCtx) })
	n.wg.Go(func() { n.closeSessionsLoop(runCtx) })

	n.log.Info().
		Str("gossip_addr", n.cluster.GossipAddr()).
		Str("proxy_addr", n.ProxyAddr()).
		Str("admin_addr", n.AdminAddr()).
		Str("tls_addr", n.TLSAddr()).
		Strs("join", n.cfg.Gossip.Seeds).
		Str("config_fingerprint", fp(n.configFP.Load())).
		Msg("node started")
	n.logLimits()
	if n.cfg.BackendTLS.Insecure {
		n.log.Warn().Msg("backend tls certificates are not verified (--backend-tls-insecure): anyone on the path to a backend can read and change its traffic")
	}
	return nil
}

func listen(addr, what string) (net.Listener, error) {
	ln, err := listenConfig.Listen(context.Background(), "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%s address %s is already in use", what, addr)
		}
		return nil, fmt.Errorf("%s listen on %s: %w", what, addr, err)
	}
	return ln, nil
}

func (n *Node) serve(srv *http.Server, ln net.Listener, what string) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.log.Error().Err(err).Str("listener", what).Msg("listener stopped")
	}
}

// upsertStatic puts the configured backends into the catalog once the node
// has seen the mesh's catalog, so a restart does not overwrite newer
// changes made through the API unless the configuration says otherwise.
func (n *Node) upsertStatic(ctx context.Context) {
	if len(n.cfg.Backends) == 0 {
		return
	}
	if !n.waitSynced(ctx) {
		if ctx.Err() != nil {
			return
		}
		n.log.Warn().Dur("timeout", n.cfg.SyncTimeout).Msg("no sync with the mesh yet; adding configured backends anyway")
	}
	current := make(map[string]gossip.Record)
	for _, r := range n.cluster.Records() {
		current[r.ID] = r
	}
	for _, b := range n.cfg.Backends {
		// A backend the mesh knows stays as the mesh has it: drained or
		// removed through the API, it is not brought back by a node that
		// restarts with an old configuration. Only a new address in the
		// configuration of a live backend, or an unknown backend, is written.
		w, pool := max(b.Weight, 1), b.pool()
		if r, ok := current[b.ID]; ok && (r.State == gossip.StateRemoved || r.Addr == b.Addr && r.Weight == w && r.Pool == pool) {
			continue
		}
		if _, err := n.cluster.UpsertBackend(b.ID, b.Addr, w, pool); err != nil {
			n.log.Error().Err(err).Str("backend", b.ID).Msg("add configured backend failed")
		}
	}
}

// waitSynced waits up to SyncTimeout for a first sync with the mesh.
func (n *Node) waitSynced(ctx context.Context) bool {
	deadline := time.NewTimer(n.cfg.SyncTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !n.cluster.Synced() {
		select {
		case <-ctx.Done():
			return false
		case <-deadline.C:
			return false
		case <-tick.C:
		}
	}
	return true
}

// Shutdown drains, leaves the mesh gracefully and stops every goroutine.
// The drain ends LeaveTimeout before ctx's deadline, and the leave gets its
// whole LeaveTimeout even if ctx has ended: give ctx the config's
// ShutdownTimeout so that neither is cut. It is safe to call more than
// once; later calls return the first call's result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.shutdownOnce.Do(func() { n.shutdownErr = n.shutdown(ctx) })
	return n.shutdownErr
}

func (n *Node) shutdown(ctx context.Context) error {
	if !n.started.Load() {
		return nil
	}
	var errs []error
	n.draining.Store(true) // readiness false from here
	if err := n.publishMeta(); err != nil {
		n.log.Warn().Err(err).Msg("announce draining failed")
	}
	// The drain gets what the deadline leaves after the leave's budget, so
	// a drain that runs to its timeout cannot starve the leave.
	dctx := ctx
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		dctx, cancel = context.WithDeadline(ctx, d.Add(-n.cfg.LeaveTimeout))
		defer cancel()
	}
	if err := n.drain(dctx); err != nil {
		errs = append(errs, err)
	}
	if n.tls != nil {
		// The drain's Shutdown closed it if its Serve had begun; this
		// covers a stop before that, so the accept loop can end.
		n.tls.acc.Close()
	}
	n.metaMu.Lock()
	n.leaving.Store(true) // rebuilds from here on leave the meta alone
	n.metaMu.Unlock()
	if n.cancel != nil {
		n.cancel()
	}
	// Leave before the sockets go away: a bare Shutdown looks like a crash
	// to the peers, who would then try to re-join us for a day. The leave
	// gets its whole budget even past ctx's deadline, for the same reason.
	if err := n.cluster.Leave(n.cfg.LeaveTimeout); err != nil {
		if len(n.cluster.Members()) > 1 {
			errs = append(errs, err) // it names the operation already
		} else {
			// Every peer left or failed while our leave was queued: memberlist
			// had no one left to send it to, and no one needs it.
			n.log.Info().Err(err).Msg("left with no peer left to hear it")
		}
	}
	// DNS served the others' addresses through the drain and the leave.
	if n.dns != nil {
		dctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := n.dns.Shutdown(dctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	if n.adminSrv != nil {
		if err := n.adminSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
		}
	}
	n.decider.Shutdown()
	n.checker.Close()
	if err := n.cluster.Shutdown(); err != nil {
		errs = append(errs, err) // "shutdown gossip: ..." already
	}
	if err := n.router.Close(); err != nil {
		errs = append(errs, fmt.Errorf("router close: %w", err))
	}
	n.wg.Wait()
	n.stopObserve() // after the router: the last sessions' lines are in
	n.log.Info().Msg("node stopped")
	return errors.Join(errs...)
}

// AdminAddr is the bound admin address (useful when configured with port 0).
func (n *Node) AdminAddr() string { return addrOf(n.adminLn) }

// ProxyAddr is the bound proxy address.
func (n *Node) ProxyAddr() string { return addrOf(n.proxyLn) }

// GossipAddr is the advertised gossip address.
func (n *Node) GossipAddr() string { return n.cluster.GossipAddr() }

// Name is the node's name in the mesh.
func (n *Node) Name() string { return n.cfg.Name }

// Registry holds the node's metrics; each node has its own, so several nodes
// can live in one process.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Cluster exposes the node's gossip cluster (catalog changes, members).
func (n *Node) Cluster() *gossip.Cluster { return n.cluster }

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// advertised turns a bound address into one peers can use: an unspecified
// host (":8080", "0.0.0.0:8080") takes the host of the gossip advertise
// address.
func (n *Node) advertised(bound string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if ghost, _, err := net.SplitHostPort(n.cluster.GossipAddr()); err == nil {
			return net.JoinHostPort(ghost, port)
		}
	}
	return bound
}

func (n *Node) publishMetaLogged() {
	if err := n.publishMeta(); err != nil {
		n.log.Error().Err(err).Msg("publish node meta failed")
	}
}

// publishMeta sets the node meta from the current state. It is serialised
// so that a rebuild's publication can't overwrite a newer state (draining)
// that shutdown published meanwhile, and it stops once the node leaves.
func (n *Node) publishMeta() error {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	if n.leaving.Load() {
		return nil
	}
	state := gossip.NodeActive
	if n.draining.Load() {
		state = gossip.NodeDraining
	}
	var ringFP uint64
	if t := n.table.Load(); t != nil {
		ringFP = t.Fingerprint
	}
	ready, _ := n.Ready()
	return n.cluster.SetMeta(gossip.Meta{
		Ready:     ready,
		Role:      gossip.RoleBalancer,
		State:     state,
		ProxyAddr: n.advertisedProxy(),
		AdminAddr: n.advertised(n.AdminAddr()),
		ConfigFP:  n.configFP.Load(),
		RingFP:    ringFP,
	})
}

// Ready reports whether the node should receive traffic, and why not.
func (n *Node) Ready() (bool, string) {
	switch {
	case !n.started.Load():
		return false, "not started"
	case n.draining.Load():
		return false, "draining"
	case !n.cluster.Synced():
		return false, "not yet synced with a peer"
	case n.tls != nil && !n.tls.isReady():
		return false, "tls session-ticket keys not yet known"
	}
	if r := n.driftRefusal(); r != "" {
		return false, r
	}
	t := n.table.Load()
	switch {
	case t == nil:
		return false, "no ring yet"
	case t.Backends() == 0:
		return false, "no backends"
	}
	return true, ""
}

// Table returns the routing table in use. It is never nil after Start.
func (n *Node) Table() *Table { return n.table.Load() }

func fp(v uint64) string { return fmt.Sprintf("%016x", v) }

// Reload is what SIGHUP asks of a running node: the admin token file and
// the TLS certificates are read again, and the access log is reopened (for
// logrotate). Whatever fails to load is logged, and what was in force
// stays: a typo must not lock the operator out or drop a certificate.
func (n *Node) Reload() {
	if err := n.ReloadAdminTokens(); err != nil {
		n.log.Error().Err(err).Msg("admin token reload failed; keeping the previous tokens")
	}
	n.ReloadTLS()
	n.ReopenAccessLog()
}

// ApplyTunables applies a reloaded configuration's limits and timeouts
// (router.Tunables: max-conns, the backend connect and WebSocket handshake
// timeouts, the tunnel idle timeout, ping interval, write timeouts and the
// frame size limit) to the proxy: to the requests and sessions that start
// from now on, and to the timers of open WebSockets at their next reset.
// Nothing changes when a value is refused.
func (n *Node) ApplyTunables(rc router.Config) error {
	t := rc.Tunables()
	t.MaxConns, _, _ = resolveMaxConns(rc.MaxConns)
	return n.router.SetTunables(t)
}

// ApplyRoutes applies a reloaded configuration's routes and pools' key
// sources together. They are part of the config fingerprint: the node
// publishes its new one at once and, like a node started with it, is not
// ready and serves 503 while most live members publish another (unless
// AllowConfigDrift). A mesh changes its routes by reloading every node in
// a short while. Nothing changes when they are refused.
func (n *Node) ApplyRoutes(routes []router.Route, poolKeySources map[string]string) error {
	for _, r := range routes {
		if err := gossip.ValidatePool(r.Pool); err != nil {
			return fmt.Errorf("route %s: %w", r, err)
		}
	}
	for pool := range poolKeySources {
		if err := gossip.ValidatePool(pool); err != nil {
			return err
		}
	}
	cfg := n.cfg
	cfg.Router.Routes, cfg.Router.PoolKeySources = routes, poolKeySources
	fpNew, err := configFingerprint(cfg)
	if err != nil {
		return err
	}
	if err := n.router.SetRoutes(routes, poolKeySources); err != nil {
		return err
	}
	n.configFP.Store(fpNew)
	n.updateDrift()
	n.publishMetaLogged()
	n.log.Info().Str("config_fingerprint", fp(fpNew)).Int("routes", len(routes)).Msg("routes applied")
	return nil
}

// Tunables are the proxy's limits and timeouts in force.
func (n *Node) Tunables() router.Tunables { return n.router.Tunables() }

// ApplyStaticBackends applies a reloaded configuration's static backends:
// a backend new to the list, or with a new address or weight, is written to the
// catalog (after the checks the admin API makes); one dropped from the list
// is removed. A backend in both lists at the same address is left as the
// mesh has it, so a reload does not undo a drain made through the API.
// Each change is logged; a refused one is logged and skipped.
func (n *Node) ApplyStaticBackends(ctx context.Context, old, new []BackendSpec) {
	was := make(map[string]BackendSpec, len(old))
	for _, b := range old {
		was[b.ID] = b
	}
	keep := make(map[string]bool, len(new))
	for _, b := range new {
		keep[b.ID] = true
		w, pool := max(b.Weight, 1), b.pool()
		if o, ok := was[b.ID]; ok && o.Addr == b.Addr && max(o.Weight, 1) == w && o.pool() == pool {
			continue
		}
		if err := n.checkWeight(b.ID, pool, w); err != nil {
			n.log.Error().Err(err).Str("backend", b.ID).Msg("reload: configured backend refused")
			continue
		}
		if err := n.guard.checkAddr(ctx, b.Addr); err != nil {
			n.log.Error().Err(err).Str("backend", b.ID).Msg("reload: configured backend refused")
			continue
		}
		if err := n.checkCapacity(b.ID, pool); err != nil {
			n.log.Error().Err(err).Str("backend", b.ID).Msg("reload: configured backend refused")
			continue
		}
		if _, err := n.cluster.UpsertBackend(b.ID, b.Addr, w, pool); err != nil {
			n.log.Error().Err(err).Str("backend", b.ID).Msg("reload: add configured backend failed")
			continue
		}
		n.log.Info().Str("backend", b.ID).Str("addr", b.Addr).Int("weight", w).Str("pool", pool).Msg("reload: backend added")
	}
	for _, b := range old {
		if keep[b.ID] {
			continue
		}
		if _, err := n.cluster.SetState(b.ID, gossip.StateRemoved); err != nil {
			n.log.Error().Err(err).Str("backend", b.ID).Msg("reload: remove configured backend failed")
			continue
		}
		n.log.Info().Str("backend", b.ID).Msg("reload: backend removed")
	}
}
