package gossip

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/logx"
)

const (
	// metaUpdateTimeout bounds how long Leave waits for memberlist to send
	// the leaving meta; the update is applied locally anyway.
	metaUpdateTimeout = time.Second
	// tcpTimeout bounds memberlist's push/pull and joins to a peer that does
	// not answer, and so how long Shutdown may wait for a join in progress.
	tcpTimeout = 5 * time.Second
	// maxQueued bounds our broadcast queue; older, most-sent deltas go first
	// (push/pull repairs whatever that drops).
	maxQueued = 4096
	// maxRelayFromState caps how many records learned from one push/pull are
	// re-broadcast; beyond that, digests and push/pull carry them.
	maxRelayFromState = 32
	// failedPeerTTL is how long a failed peer is retried by the rejoin loop.
	failedPeerTTL = 24 * time.Hour
)

// errShutdown is returned by calls made after Shutdown.
var errShutdown = errors.New("cluster is shut down")

// Cluster is this node's membership in the mesh and its replica of the
// backend catalog. All methods are safe for concurrent use.
type Cluster struct {
	cfg   Config
	log   zerolog.Logger
	m     *metrics
	queue *memberlist.TransmitLimitedQueue
	specs map[Kind]KindSpec // every kind, the catalog included; read-only
	// keyring is memberlist's, nil without a SecretKey; set in New and
	// never replaced (the Keyring has its own lock). See keyring.go.
	keyring *memberlist.Keyring

	// subs are the channels Subscribe handed out; fixed once Start runs.
	subsMu sync.Mutex
	subs   []chan struct{}

	numNodes atomic.Int64  // live members incl. self, for the queue
	digest   atomic.Uint64 // digest of the whole replicated state, for acks
	digests  sync.Map      // Kind → *atomic.Uint64: each kind's digest, read without mu
	synced   atomic.Bool
	left     atomic.Bool
	ml       atomic.Pointer[memberlist.Memberlist]

	repairCh  chan repairRequest // cap 1: at most one pending repair
	rejectLog logx.Limiter
	logw      *logWriter // memberlist's LogOutput, set by Start

	// mu guards the fields below. It is held only briefly and never while
	// calling into memberlist (except its queue, which has its own lock).
	mu        sync.Mutex
	store     *store
	mine      map[storeKey]Entry // our own writes of owned kinds
	clock     uint64             // last HLC value seen or issued
	meta      Meta
	metaBytes []byte
	addr      string          // advertised gossip address, once started
	history   digestHistory   // recent catalog digests
	peers     map[string]peer // live members by name, self included
	// peersGen counts changes of peers; sorted is Members' answer at
	// sortedGen, so that the callers on every gossip change (the
	// decider, drift, the event log) don't sort the members each time.
	peersGen, sortedGen uint64
	sorted              []Member
	failed              map[string]failedPeer // members that disappeared without leaving

	// life serialises Start, SetMeta, Leave and Shutdown.
	life     sync.Mutex
	started  bool
	shutdown bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// wrapTransportForTest, set before Start, wraps memberlist's transport.
	wrapTransportForTest func(memberlist.NodeAwareTransport) memberlist.NodeAwareTransport
	// tweakMemberlistForTest, set before Start, edits memberlist's config.
	tweakMemberlistForTest func(*memberlist.Config)
}

// peer is a live member as the event delegate last saw it. memberlist
// mutates the Nodes it hands out, so we keep copies.
type peer struct {
	addr    string
	meta    []byte
	state   NodeState // from meta; 0 if it does not decode
	decoded Meta      // meta decoded once, here: Members is called often
	metaErr error
}

type failedPeer struct {
	addr  string
	since time.Time
}

// Member is a live member of the mesh.
type Member struct {
	Name    string
	Addr    string // gossip host:port
	Meta    Meta
	MetaErr error // meta undecodable (another version?); the member is still listed
}

// New validates cfg and returns a Cluster that is not started: it opens no
// socket and starts no goroutine.
func New(cfg Config) (*Cluster, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new gossip cluster: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("new gossip cluster: %w", err)
	}
	metaBytes, _ := cfg.Meta.Encode() // validated above
	c := &Cluster{
		cfg:       cfg,
		log:       cfg.Logger.With().Str("component", "gossip").Logger(),
		m:         m,
		repairCh:  make(chan repairRequest, 1),
		mine:      make(map[storeKey]Entry),
		meta:      cfg.Meta,
		metaBytes: metaBytes,
		peers:     make(map[string]peer),
		failed:    make(map[string]failedPeer),
	}
	if c.keyring, err = newKeyring(cfg); err != nil {
		return nil, fmt.Errorf("new gossip cluster: %w", err)
	}
	specs := append([]KindSpec{catalogSpec(cfg.ValidateBackendID).withDefaults()}, cfg.Kinds...)
	c.specs = make(map[Kind]KindSpec, len(specs))
	for _, sp := range specs {
		c.specs[sp.Kind] = sp
		c.digests.Store(sp.Kind, new(atomic.Uint64))
	}
	c.store = newStore(cfg.TombstoneTTL, specs)
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(max(1, c.numNodes.Load())) },
		RetransmitMult: cfg.RetransmitMult,
	}
	c.noteLocked()
	return c, nil
}

// Start binds the gossip port, starts memberlist and the Cluster's
// goroutines, and joins the seeds in the background, retrying with backoff
// until one answers (see Synced). ctx bounds Start only; the Cluster runs
// until Shutdown.
func (c *Cluster) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start gossip: %w", err)
	}
	c.life.Lock()
	defer c.life.Unlock()
	switch {
	case c.shutdown:
		return fmt.Errorf("start gossip: %w", errShutdown)
	case c.started:
		return errors.New("start gossip: already started")
	}

	mc, err := c.memberlistConfig(ctx)
	if err != nil {
		return err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = mc.Transport.Shutdown()
		return fmt.Errorf("start gossip on %s: %w", c.cfg.BindAddr, err)
	}
	c.ml.Store(ml)
	c.started = true
	c.mu.Lock()
	c.addr = c.peers[c.cfg.Name].addr // Create has called NotifyJoin for us
	c.mu.Unlock()
	if len(c.cfg.Seeds) == 0 {
		c.synced.Store(true)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.wg.Go(func() { (&joiner{c: c}).run(runCtx) })
	c.wg.Go(func() { (&repairer{c: c}).run(runCtx) })
	c.wg.Go(func() { c.housekeep(runCtx) })
	c.log.Info().Str("addr", c.GossipAddr()).Strs("seeds", c.cfg.Seeds).
		Bool("encrypted", c.cfg.SecretKey != nil).Msg("gossip started")
	return nil
}

// memberlistConfig starts from DefaultLANConfig and binds the transport.
func (c *Cluster) memberlistConfig(ctx context.Context) (*memberlist.Config, error) {
	cfg := c.cfg
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipNodes = cfg.GossipNodes
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.PushPullInterval = cfg.PushPullInterval
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	mc.TCPTimeout = tcpTimeout
	mc.Delegate = &delegate{c}
	mc.Events = &eventDelegate{c}
	mc.Ping = &pingDelegate{c}
	c.logw = &logWriter{
		log:      cfg.Logger.With().Str("component", "memberlist").Logger(),
		lines:    c.m.logLines,
		rejected: c.m.logRejected,
	}
	mc.LogOutput = c.logw
	if c.keyring != nil {
		mc.Keyring = c.keyring
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}

	bindIP, bindPort, err := resolveHostPort(ctx, cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("start gossip: bind address: %w", err)
	}
	mc.BindAddr, mc.BindPort = bindIP.String(), bindPort
	if cfg.AdvertiseAddr != "" {
		ip, port, err := resolveHostPort(ctx, cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("start gossip: advertise address: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ip.String(), port
	} else {
		mc.AdvertiseAddr, mc.AdvertisePort = "", 0
	}
	nt, err := bindTransport(mc, bindIP.String(), bindPort)
	if err != nil {
		return nil, fmt.Errorf("start gossip: bind %s: %w", cfg.BindAddr, err)
	}
	if mc.AdvertiseAddr != "" && mc.AdvertisePort == 0 {
		mc.AdvertisePort = nt.GetAutoBindPort()
	}
	mc.BindPort = nt.GetAutoBindPort()
	mc.Transport = nt
	if c.wrapTransportForTest != nil {
		mc.Transport = c.wrapTransportForTest(nt)
	}
	if c.tweakMemberlistForTest != nil {
		c.tweakMemberlistForTest(mc)
	}
	return mc, nil
}

// bindTransport opens the TCP and UDP listeners. For port 0 it retries, as
// memberlist does, because the kernel's free TCP port may be taken for UDP.
func bindTransport(mc *memberlist.Config, ip string, port int) (*memberlist.NetTransport, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{ip},
			BindPort:  port,
			Logger:    log.New(mc.LogOutput, "", 0), // memberlist's lines, through logWriter
		})
		if err == nil {
			return nt, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

// ErrClosed is returned for a write after Leave or Shutdown: it could never
// reach the mesh.
var ErrClosed = errors.New("node has left the mesh")

// closed reports whether writes can no longer be broadcast.
func (c *Cluster) closed() bool {
	c.life.Lock()
	defer c.life.Unlock()
	return c.shutdown || c.left.Load()
}

// LocalName returns this node's name.
func (c *Cluster) LocalName() string { return c.cfg.Name }

// GossipAddr returns the host:port peers reach us at, once started; before
// Start it returns the configured advertise or bind address.
func (c *Cluster) GossipAddr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cmp.Or(c.addr, c.cfg.AdvertiseAddr, c.cfg.BindAddr)
}

// Synced reports whether this node has exchanged full state with a peer
// (joined one, or been joined), or has no seeds to join.
func (c *Cluster) Synced() bool { return c.synced.Load() }

// digestHistory remembers the last catalog digests. A peer whose digest is
// one of them holds a state we had: it is behind and repairs itself when it
// probes someone, so we need not push/pull with it.
type digestHistory struct {
	d    [64]uint64
	next int
	n    int
}

func (h *digestHistory) add(d uint64) {
	if h.n > 0 && h.d[(h.next+len(h.d)-1)%len(h.d)] == d {
		return
	}
	h.d[h.next] = d
	h.next = (h.next + 1) % len(h.d)
	h.n = min(h.n+1, len(h.d))
}

func (h *digestHistory) has(d uint64) bool {
	for i := range h.n {
		if h.d[i] == d {
			return true
		}
	}
	return false
}

// knownDigest reports whether the catalog had digest d recently.
func (c *Cluster) knownDigest(d uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.history.has(d)
}

// Members returns the live members, this node included, sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.peers) == 0 { // not started
		return []Member{{Name: c.cfg.Name, Addr: cmp.Or(c.addr, c.cfg.AdvertiseAddr, c.cfg.BindAddr), Meta: c.meta}}
	}
	if c.sorted == nil || c.sortedGen != c.peersGen {
		out := make([]Member, 0, len(c.peers))
		for name, p := range c.peers {
			out = append(out, Member{Name: name, Addr: p.addr, Meta: p.decoded, MetaErr: p.metaErr})
		}
		slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.Name, b.Name) })
		c.sorted, c.sortedGen = out, c.peersGen
	}
	return slices.Clone(c.sorted)
}

// FailedMember is a member that went away without leaving: memberlist
// declared it dead, and the rejoin loop keeps trying it for a while.
type FailedMember struct {
	Name  string
	Addr  string // gossip host:port
	Since time.Time
}

// Failed returns the members that failed and have not come back, sorted
// by name; they are forgotten after failedPeerTTL, as the rejoin loop
// forgets them (Serf's failed members, reaped likewise).
func (c *Cluster) Failed() []FailedMember {
	c.mu.Lock()
	out := make([]FailedMember, 0, len(c.failed))
	for name, f := range c.failed {
		out = append(out, FailedMember{Name: name, Addr: f.addr, Since: f.since})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b FailedMember) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Suspects returns the names of the members memberlist suspects now: still
// listed as live, but a probe went unanswered and the mesh is waiting for
// a refutation before it declares them dead.
func (c *Cluster) Suspects() map[string]bool {
	ml := c.ml.Load()
	if ml == nil {
		return nil
	}
	var out map[string]bool
	for _, m := range ml.Members() {
		if m.State == memberlist.StateSuspect {
			if out == nil {
				out = make(map[string]bool)
			}
			out[m.Name] = true
		}
	}
	return out
}

// SetMeta replaces this node's meta and announces it (memberlist UpdateNode,
// waiting up to a second for the broadcast to go out). It is a no-op when m
// is unchanged. A zero Role or State keeps the current one.
func (c *Cluster) SetMeta(m Meta) error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.shutdown {
		return fmt.Errorf("set meta: %w", errShutdown)
	}
	if c.left.Load() {
		return errors.New("set meta: left the mesh")
	}
	return c.setMetaLocked(m, 0)
}

// setMetaLocked is SetMeta with c.life held. wait is how long to wait for
// the broadcast to go out: memberlist's UpdateNode blocks until the alive
// message has been retransmitted in full, which takes many gossip rounds,
// so SetMeta (called after every ring rebuild) only queues it; Leave waits,
// so that peers learn we are leaving before the leave itself arrives.
func (c *Cluster) setMetaLocked(m Meta, wait time.Duration) error {
	c.mu.Lock()
	if m.Role == 0 {
		m.Role = c.meta.Role
	}
	if m.State == 0 {
		m.State = c.meta.State
	}
	b, err := m.Encode()
	if err != nil {
		c.mu.Unlock()
		return fmt.Errorf("set meta: %w", err)
	}
	if bytes.Equal(b, c.metaBytes) {
		c.mu.Unlock()
		return nil
	}
	c.meta, c.metaBytes = m, b
	c.mu.Unlock()
	c.signal()
	if ml := c.ml.Load(); ml != nil {
		// A zero timeout would wait forever; the alive message is queued
		// before UpdateNode starts waiting, so a nanosecond only skips the wait.
		if err := ml.UpdateNode(max(wait, time.Nanosecond)); err != nil && wait > 0 {
			c.log.Debug().Err(err).Msg("meta update not yet sent")
		}
	}
	return nil
}

// Leave announces NodeLeaving in the meta, then broadcasts memberlist's
// leave, waiting up to timeout. Peers drop this node and do not try to
// re-join it. Leave is idempotent; after Shutdown it returns an error.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.life.Lock()
	defer c.life.Unlock()
	switch {
	case c.shutdown:
		return fmt.Errorf("leave: %w", errShutdown)
	case !c.started:
		return errors.New("leave: not started")
	case c.left.Load():
		return nil
	}
	c.left.Store(true)
	c.mu.Lock()
	m := c.meta
	c.mu.Unlock()
	m.State = NodeLeaving
	if err := c.setMetaLocked(m, metaUpdateTimeout); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	// memberlist waits forever on a zero timeout.
	if err := c.ml.Load().Leave(max(timeout, time.Millisecond)); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	c.log.Info().Msg("left the mesh")
	return nil
}

// Shutdown stops memberlist and waits for every goroutine of the Cluster.
// Without a Leave before it, peers see a crash. It is safe to call more than
// once, and before Start.
func (c *Cluster) Shutdown() error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.shutdown {
		return nil
	}
	c.shutdown = true
	if !c.started {
		return nil
	}
	if !c.left.Load() {
		c.log.Warn().Msg("shutdown without leave")
	}
	c.cancel()
	err := c.ml.Load().Shutdown()
	c.wg.Wait()
	c.logw.stop()
	c.log.Info().Msg("gossip stopped")
	if err != nil {
		return fmt.Errorf("shutdown gossip: %w", err)
	}
	return nil
}

// housekeep expires tombstones, forgets old failed peers and keeps the
// member gauge, once a second.
func (c *Cluster) housekeep(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.mu.Lock()
			n := c.store.Expire(now)
			forgot := c.store.forgetOwned(func(node string) bool {
				_, live := c.peers[node]
				return live || node == c.cfg.Name
			}, now)
			if n > 0 || forgot > 0 {
				c.noteLocked()
			}
			// Our own writes of owned kinds are remembered to refute stale
			// copies; one whose entry is gone (its backend was removed) is
			// forgotten with it.
			for k := range c.mine {
				if _, ok := c.store.Get(k.kind, k.key); !ok {
					delete(c.mine, k)
				}
			}
			for name, f := range c.failed {
				if now.Sub(f.since) > failedPeerTTL {
					delete(c.failed, name)
				}
			}
			c.mu.Unlock()
			if n > 0 || forgot > 0 {
				c.log.Debug().Int("tombstones", n).Int("owned_entries", forgot).Msg("expired state forgotten")
				c.signal()
			}
		}
	}
}

// rejected counts and, rate-limited, logs a message we could not accept.
func (c *Cluster) rejected(kind string, err error) {
	reason := rejectReason(err)
	c.m.rejected.WithLabelValues(reason).Inc()
	if ok, n := c.rejectLog.Allow(); ok {
		c.log.Warn().Err(err).Str("type", kind).Str("reason", reason).
			Int64("suppressed", n).Msg("gossip message rejected")
	}
}
