package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Config configures a [Cluster]. A zero duration or count means the default
// of [DefaultConfig]; New copies the Config, so later edits do not reach it.
type Config struct {
	// Name is required and unique in the mesh: 1 to 255 printable bytes.
	Name string
	// BindAddr is the host:port memberlist listens on (TCP and UDP); a name
	// binds its first address, an empty host every address. Port 0 picks a
	// free port (tests). Default "0.0.0.0:7946".
	BindAddr string
	// AdvertiseAddr is the host:port peers use to reach us (a name is
	// resolved at Start; port 0 means the bound port). Default: the bound IP
	// (a private IP when bound to 0.0.0.0) and the bound port.
	AdvertiseAddr string
	// Seeds are host:port addresses to join. A DNS name with several A/AAAA
	// records means all of them. No seeds: a single node, synced at once.
	Seeds []string
	// SecretKey is nil, or an AES key of 16, 24 or 32 bytes. Nodes with
	// another key, or none, cannot join.
	SecretKey []byte
	// ExtraKeys are further keys of the keyring, installed beside
	// SecretKey (the primary, which encrypts) so that messages under any
	// of them are read: the state in the middle of a key rotation, as a
	// keyring file keeps it across a restart. They need a SecretKey.
	ExtraKeys [][]byte
	// Kinds are the kinds of replicated state besides the catalog, each
	// with its own number (not KindBackend), registered by their owners
	// through the node. Every node of a mesh should register the same
	// kinds; entries of a kind a node lacks are skipped there.
	Kinds []KindSpec
	// ValidateBackendID is the rule for backend IDs (the catalog's keys),
	// applied to local writes and to peers' records alike: the node passes
	// the ring's. Default: 1 to 255 printable bytes.
	ValidateBackendID func(id string) error
	// Meta is the initial node meta. A zero Role means RoleBalancer and a
	// zero State means NodeActive.
	Meta Meta
	// Logger receives our logs and memberlist's, tagged component=gossip or
	// component=memberlist; the caller's context (the node name) is kept.
	// Default: zerolog.Nop().
	Logger zerolog.Logger
	// Registerer receives the metrics; nil leaves them unregistered. Give
	// each Cluster in one process its own registry.
	Registerer prometheus.Registerer

	// GossipInterval is how often each node sends queued broadcasts to
	// GossipNodes random peers.
	GossipInterval time.Duration
	// ProbeInterval and ProbeTimeout drive failure detection; each probe ack
	// also carries the catalog digest that triggers repairs.
	ProbeInterval, ProbeTimeout time.Duration
	// PushPullInterval is the period of the full-state exchange with one
	// random peer (memberlist scales it up above 32 nodes).
	PushPullInterval time.Duration
	// RejoinInterval is the period, jittered ±25 %, of re-joining seeds and
	// failed peers that are not members: this heals partitions.
	RejoinInterval time.Duration
	// TombstoneTTL is how long a removed backend is remembered.
	TombstoneTTL time.Duration
	// DeadNodeReclaimTime is how long after a node is declared dead its name
	// may come back from another address (a restart on a new port).
	DeadNodeReclaimTime time.Duration
	// GossipNodes is the number of peers each gossip round sends to.
	GossipNodes int
	// RetransmitMult: each catalog delta is sent RetransmitMult ×
	// ceil(log10(N+1)) times by every node that relays it.
	RetransmitMult int
	// SuspicionMult scales the suspicion timeout: SuspicionMult ×
	// max(1, log10 N) × ProbeInterval before a suspect is declared dead.
	SuspicionMult int
}

// DefaultConfig returns production defaults for a LAN, starting from
// memberlist's DefaultLANConfig. The numbers were picked by measurement
// (BenchmarkConvergence, in-process on loopback, 2 shared cores):
//
//   - GossipInterval 50ms, GossipNodes 4: an upsert reaches every member in
//     0.05 / 0.15 / 0.15 s (median; max 0.05 / 0.16 / 0.21 s) at N = 5 / 20 /
//     50, against 0.20 / 0.40 / 0.41 s with memberlist's 200ms. A fan-out of 3
//     was slower at N = 50 (0.20 s).
//   - RetransmitMult 8 (our own queue): with bursts of 20 concurrent upserts
//     at N = 50, 4 left a member behind in 0.4 bursts of 1 (repaired by
//     digest, up to 0.8 s), 6 and 8 in none of 40. 8 keeps a margin for real
//     packet loss: at 20 updates/s, 4 missed 8 of 385 updates, 8 none.
//   - ProbeInterval 500ms, ProbeTimeout 250ms, SuspicionMult 3: a crashed
//     node was dropped by every member in 3.0 s at N = 5 and 2.8 s at N = 20
//     (a Leave in 0.1-0.2 s), without the false deaths of a 200ms/100ms
//     detector on starved CPUs. The probe acks carry the digest, so a missed
//     delta is repaired in about one probe interval.
//   - PushPullInterval 5s: the full-state bound when a repair is missed
//     (memberlist's 30 s took minutes to reach every node of 50).
//   - RejoinInterval 30s: a partition that outlasted the suspicion window
//     (and memberlist's 30 s of gossip to the dead) merges within about half
//     a minute of healing; a dead seed costs one refused connection a period.
//   - TombstoneTTL 24h: far longer than a delta or push/pull takes to reach a
//     member, and than any partition we expect to heal from.
//   - DeadNodeReclaimTime 2s: a node restarted on a new port is taken back a
//     couple of seconds after it was declared dead, not after memberlist's
//     reap of the dead entry (~60 s, with the name refused meanwhile).
func DefaultConfig() Config {
	return Config{
		BindAddr:            "0.0.0.0:7946",
		GossipInterval:      50 * time.Millisecond,
		GossipNodes:         4,
		ProbeInterval:       500 * time.Millisecond,
		ProbeTimeout:        250 * time.Millisecond,
		SuspicionMult:       3,
		PushPullInterval:    5 * time.Second,
		RejoinInterval:      30 * time.Second,
		TombstoneTTL:        24 * time.Hour,
		DeadNodeReclaimTime: 2 * time.Second,
		RetransmitMult:      8,
		Logger:              zerolog.Nop(),
	}
}

// LocalConfig returns faster timers for in-process tests on loopback: the
// same dissemination (RetransmitMult 8, never memberlist's DefaultLocalConfig
// value 2, which loses updates routinely), 30ms gossip, a 300ms/200ms
// detector (a crash is noticed in 1-2 s; faster ones flapped under the
// race detector on 2 shared cores), 2 s push/pull, 1 s rejoin and 500ms
// dead-name reclaim, bound to 127.0.0.1 on a free port.
func LocalConfig() Config {
	c := DefaultConfig()
	c.BindAddr = "127.0.0.1:0"
	c.GossipInterval = 30 * time.Millisecond
	c.ProbeInterval = 300 * time.Millisecond
	c.ProbeTimeout = 200 * time.Millisecond
	c.SuspicionMult = 3
	c.PushPullInterval = 2 * time.Second
	c.RejoinInterval = time.Second
	c.DeadNodeReclaimTime = 500 * time.Millisecond
	return c
}

// withDefaults fills zero fields from DefaultConfig and copies slices.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	setDur(&c.GossipInterval, d.GossipInterval)
	setDur(&c.ProbeInterval, d.ProbeInterval)
	setDur(&c.ProbeTimeout, d.ProbeTimeout)
	setDur(&c.PushPullInterval, d.PushPullInterval)
	setDur(&c.RejoinInterval, d.RejoinInterval)
	setDur(&c.TombstoneTTL, d.TombstoneTTL)
	setDur(&c.DeadNodeReclaimTime, d.DeadNodeReclaimTime)
	setInt := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setInt(&c.GossipNodes, d.GossipNodes)
	setInt(&c.RetransmitMult, d.RetransmitMult)
	setInt(&c.SuspicionMult, d.SuspicionMult)
	if c.Meta.Role == 0 {
		c.Meta.Role = RoleBalancer
	}
	if c.Meta.State == 0 {
		c.Meta.State = NodeActive
	}
	c.Seeds = append([]string(nil), c.Seeds...)
	kinds := make([]KindSpec, len(c.Kinds))
	for i, k := range c.Kinds {
		kinds[i] = k.withDefaults()
	}
	c.Kinds = kinds
	if c.ValidateBackendID == nil {
		c.ValidateBackendID = validateID
	}
	c.SecretKey = append([]byte(nil), c.SecretKey...)
	if len(c.SecretKey) == 0 {
		c.SecretKey = nil
	}
	extra := make([][]byte, 0, len(c.ExtraKeys))
	for _, k := range c.ExtraKeys {
		extra = append(extra, append([]byte(nil), k...))
	}
	c.ExtraKeys = extra
	return c
}

func (c Config) validate() error {
	if err := validateName(c.Name); err != nil {
		return fmt.Errorf("config name: %w", err)
	}
	if _, _, err := splitHostPort(c.BindAddr, true); err != nil {
		return fmt.Errorf("config bind address: %w", err)
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitHostPort(c.AdvertiseAddr, true); err != nil {
			return fmt.Errorf("config advertise address: %w", err)
		}
	}
	for _, s := range c.Seeds {
		if err := validateAddr(s); err != nil {
			return fmt.Errorf("config seed: %w", err)
		}
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("config secret key: %d bytes, want 16, 24 or 32", len(c.SecretKey))
	}
	if len(c.ExtraKeys) > 0 && c.SecretKey == nil {
		return errors.New("config extra keys: they need a secret key (the primary)")
	}
	for i, k := range c.ExtraKeys {
		if err := validateKey(k); err != nil {
			return fmt.Errorf("config extra key %d: %w", i+1, err)
		}
	}
	if _, err := c.Meta.Encode(); err != nil {
		return fmt.Errorf("config meta: %w", err)
	}
	seen := map[Kind]bool{KindBackend: true}
	budget := 0
	for _, k := range c.Kinds {
		budget += k.MaxBytes
		if err := k.validate(); err != nil {
			return fmt.Errorf("config: %w", err)
		}
		if seen[k.Kind] {
			return fmt.Errorf("config: kind %d (%s) registered twice, or as the catalog's", k.Kind, k.Name)
		}
		seen[k.Kind] = true
	}
	if budget > KindsBudget {
		return fmt.Errorf("config: the kinds may hold %d bytes together, more than the %d a full state leaves them", budget, KindsBudget)
	}
	for name, d := range map[string]time.Duration{
		"gossip interval": c.GossipInterval, "probe interval": c.ProbeInterval,
		"probe timeout": c.ProbeTimeout, "push/pull interval": c.PushPullInterval,
		"rejoin interval": c.RejoinInterval, "tombstone ttl": c.TombstoneTTL,
		"dead node reclaim time": c.DeadNodeReclaimTime,
	} {
		if d < 0 {
			return fmt.Errorf("config %s: negative duration %v", name, d)
		}
	}
	if c.ProbeTimeout > c.ProbeInterval {
		return fmt.Errorf("config probe timeout %v: longer than the probe interval %v", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.GossipNodes < 0 || c.RetransmitMult < 0 || c.SuspicionMult < 0 {
		return fmt.Errorf("config: negative gossip nodes, retransmit or suspicion multiplier")
	}
	return nil
}

// splitHostPort parses host:port with a numeric port; the host may be empty
// (every address), an IP or a name.
func splitHostPort(addr string, allowZeroPort bool) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (p == 0 && !allowZeroPort) {
		return "", 0, fmt.Errorf("address %q: bad port", addr)
	}
	return host, int(p), nil
}

// resolveHostPort turns host:port into an IP and a port: an empty host is
// 0.0.0.0 and a name resolves to its first address, IPv4 first.
func resolveHostPort(ctx context.Context, addr string) (net.IP, int, error) {
	host, port, err := splitHostPort(addr, true)
	if err != nil {
		return nil, 0, err
	}
	if host == "" {
		return net.IPv4zero, port, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip, port, nil
	}
	lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(lctx, host)
	if err != nil {
		return nil, 0, fmt.Errorf("resolve %q: %w", addr, err)
	}
	if len(ips) == 0 {
		return nil, 0, fmt.Errorf("resolve %q: no address", addr)
	}
	for _, ia := range ips {
		if ia.IP.To4() != nil {
			return ia.IP, port, nil
		}
	}
	return ips[0].IP, port, nil
}
