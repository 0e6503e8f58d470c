package node

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
	"github.com/meshlb/meshlb/meshdns"
	"github.com/meshlb/meshlb/ring"
	"github.com/meshlb/meshlb/router"
)

// BackendSpec is a backend given in the node's own configuration. Static
// backends are upserted into the mesh-wide catalog at start.
type BackendSpec struct {
	ID     string // defaults to Addr
	Addr   string // host:port
	Weight int    // 1-100 (ring.MaxWeight); 0 means 1
	Pool   string // "" means gossip.DefaultPool
}

func (b BackendSpec) pool() string {
	if b.Pool == "" {
		return gossip.DefaultPool
	}
	return b.Pool
}

// ParseBackendSpec parses "[id=]host:port".
func ParseBackendSpec(s string) (BackendSpec, error) {
	id, addr, found := strings.Cut(s, "=")
	if !found {
		addr = s
		id = DefaultBackendID(strings.TrimSpace(s))
	}
	b := BackendSpec{ID: strings.TrimSpace(id), Addr: strings.TrimSpace(addr)}
	if err := validateBackendAddr(b.Addr); err != nil {
		return BackendSpec{}, fmt.Errorf("backend %q: %w", s, err)
	}
	if err := ring.ValidateID(b.ID); err != nil {
		return BackendSpec{}, fmt.Errorf("backend %q: %w", s, err)
	}
	return b, nil
}

// DefaultBackendID is the ID of a backend given by its address alone: the
// address itself, an IPv6 one without its brackets ("[::1]:80" is
// "::1:80"), since IDs are limited to [A-Za-z0-9._:-] (ring.ValidateID).
func DefaultBackendID(addr string) string {
	return strings.NewReplacer("[", "", "]", "").Replace(addr)
}

// Config configures one node. A zero field means its documented default.
type Config struct {
	// Name is the node's unique name in the mesh. Required.
	Name string

	// ListenAddr is the proxy listener, host:port. Default ":8080".
	ListenAddr string

	// TLS configures the TLS proxy listener beside the plain one
	// (tls.go); off unless TLS.Addr is set.
	TLS TLSConfig
	// ACME gets the TLS listener's certificates from an ACME CA for the
	// whole mesh (acme.go); off without domains.
	ACME ACMEConfig
	// BackendTLS configures TLS to the backends (backendtls.go); off by
	// default.
	BackendTLS BackendTLSConfig

	// AdminAddr is the admin HTTP API, host:port. Default "127.0.0.1:9901":
	// the API can change the backend set, so it is not exposed unless asked.
	AdminAddr string

	// AdvertiseProxy is the host:port clients reach this node's proxy at,
	// published in node meta and answered by DNS. Default: ListenAddr, an
	// unspecified host taking the gossip advertise host. DNS needs an IP:
	// a node advertising a host name is left out of DNS answers.
	AdvertiseProxy string

	// DNS makes the node an authoritative DNS server for the mesh's names
	// (meshdns). Off unless DNS.Addr is set; Logger and Registerer are set
	// by the node.
	DNS meshdns.Config

	// Pprof serves Go's profiler at /debug/pprof/ on the admin listener,
	// for measuring a node under load. Off by default: a profile costs CPU
	// and shows internals.
	Pprof bool

	// AccessLog is where the access log goes (accesslog.go): a file path,
	// "stdout", or "" / "off" for none (the default). AccessLogKeys writes
	// the raw routing key in each line, not only its hash: session IDs are
	// credentials, so it is off by default.
	AccessLog     string
	AccessLogKeys bool

	// Backends are upserted into the catalog once the node has synced with
	// the mesh (or after SyncTimeout), unless the catalog already holds them
	// with the same address.
	Backends []BackendSpec

	// Gossip configures membership and replication. Name is taken from
	// Config.Name; BindAddr defaults to "0.0.0.0:7946".
	Gossip gossip.Config

	// Ring configures the consistent-hash ring; it must be identical on every
	// node of a mesh (its fingerprint travels in node meta).
	Ring ring.Config

	// CoalesceQuiet is how long the change stream must stay quiet before a
	// rebuild starts; CoalesceMax bounds how long a burst can defer it.
	// Defaults 10 ms and 100 ms: a burst of gossip (a join brings many
	// records at once) becomes one rebuild, at a cost small next to gossip's
	// own propagation time.
	CoalesceQuiet time.Duration
	CoalesceMax   time.Duration

	// Router configures the proxy on ListenAddr. Picker and Logger are set
	// by the node; the key sources must be identical mesh-wide (they are
	// part of the config fingerprint). Router.MaxConns differs from the
	// router's own meaning: 0 (the default) derives it from the
	// open-file limit, which the node raises to the hard limit (half of
	// what is left after a reserve for gossip, health checks, DNS, the
	// admin API and the backends' idle pool: each proxied connection holds
	// two descriptors; see autoMaxConns), negative means unlimited, a
	// positive number stands. The value in force is logged at start.
	Router router.Config
	// Affinity is the signed affinity cookie (affinity.go); off by default.
	Affinity AffinityConfig
	// SlowStart is the mesh-wide ramp of a backend added (slowstart.go);
	// 0 is off.
	SlowStart time.Duration

	// BackendNetworks, if set, restricts backends to these networks: the
	// admin API refuses (400) an address outside them, and the node
	// refuses to connect to one (the next candidate is tried), whatever
	// gossip brings. Default: any address. The node's own listeners are
	// refused either way. Each node's own: not part of the fingerprint.
	BackendNetworks []netip.Prefix

	// ProxyProtocol expects a PROXY protocol (v1 or v2) header on
	// connections from Router.Key.TrustedProxies.
	ProxyProtocol bool

	// MaxHeaderBytes bounds a client's request headers; past it the
	// client gets 431. Default 32 KiB.
	MaxHeaderBytes int

	// HandshakeTimeout bounds how long a client may take to send its
	// request headers. Default 10 s.
	HandshakeTimeout time.Duration

	// DrainDelay is how long a stopping node keeps serving after it has
	// turned unready, so that load balancers notice. Default 1 s; negative
	// means none.
	DrainDelay time.Duration
	// DrainSpread is the window over which a stopping node closes its
	// WebSockets, with jitter, so clients don't reconnect all at once.
	// Default 5 s; negative means all at once.
	DrainSpread time.Duration
	// DrainTimeout bounds the whole drain (WebSockets and HTTP requests).
	// Default 30 s.
	DrainTimeout time.Duration
	// DrainCloseCode is the close code sent to WebSocket clients on drain:
	// 1001 (going away, the default) or 1012 (service restart).
	DrainCloseCode uint16
	// LeaveTimeout is how long a stopping node waits, after the drain, for
	// its leave to reach the mesh. Shutdown keeps it out of the drain's
	// share of the deadline: a leave cut short looks like a crash to the
	// peers, who then try to re-join the node for a day. Default 5 s.
	LeaveTimeout time.Duration

	// HealthCheck is this node's own checking of the backends: its vote.
	// It may differ from node to node. Zero fields take health's defaults
	// (TCP connect every 1 s, timeout 500 ms, rise 2, fall 2).
	HealthCheck health.CheckConfig
	// HealthPolicy turns the votes into the mesh's verdicts: quorum, flap
	// damping, ejection budget. It must be identical mesh-wide (it is part
	// of the config fingerprint).
	HealthPolicy health.Policy

	// AllowConfigDrift lets this node serve while its ring or key settings
	// differ from the mesh's (the fingerprint most live members publish),
	// for a deliberate rolling change of ring parameters (README, "Change
	// ring settings"). Off by default: such a node is not ready and answers
	// 503, since it would route some keys elsewhere than its peers.
	AllowConfigDrift bool

	// AnnounceDelay is how long after a ring swap the node publishes its new
	// ring fingerprint in its meta. Default 500 ms (see rebuildLoop).
	AnnounceDelay time.Duration

	// SyncTimeout bounds how long static backends wait for a first sync with
	// the mesh before being upserted anyway. Default 3 s.
	SyncTimeout time.Duration

	// Logger receives the node's logs. Default: discard.
	Logger zerolog.Logger

	// Security: who may use the admin API, over what, and what one client
	// may take of the proxy (auth.go, keys.go, router/limits.go).
	Security
}

// Security is the node's admin access control, gossip key rotation and
// per-client limits. The zero value is an open admin API on loopback, the
// keyring of Gossip.SecretKey alone, and no per-client limits.
type Security struct {
	// AdminTokenFile holds lines "TOKEN ROLE" (read or write); requests
	// then need "Authorization: Bearer TOKEN". Reloaded by
	// ReloadAdminTokens. Default: no tokens, which New accepts only for a
	// loopback AdminAddr unless AdminInsecure.
	AdminTokenFile string
	// AdminAuthAll also guards /healthz, /readyz and /metrics.
	AdminAuthAll bool
	// AdminInsecure lets the admin API listen beyond loopback without
	// tokens (behind a private network or a proxy that authenticates).
	AdminInsecure bool
	// AdminAllowedOrigins are the browser origins (scheme://host[:port])
	// whose requests may change the mesh. Default none: a change sent
	// with any Origin header is refused.
	AdminAllowedOrigins []string
	// AdminHosts are the names the admin API answers to in the Host
	// header, besides IP literals and localhost (DNS rebinding).
	AdminHosts []string
	// AdminTLSCert and AdminTLSKey (PEM files) serve the admin API over
	// TLS; AdminClientCA (PEM) then also requires a client certificate
	// signed by it.
	AdminTLSCert, AdminTLSKey, AdminClientCA string
	// KeyringFile keeps the gossip keyring (JSON, base64 keys, primary
	// first) so that a restarted node holds the keys of the last rotation.
	// When it exists it replaces Gossip.SecretKey; it is written after
	// every change of the keyring. Default: none, the keyring is lost on
	// restart.
	KeyringFile string
}

func (c Config) withDefaults() Config {
	if c.ListenAddr == "" {
		c.ListenAddr = ":8080"
	}
	if c.AdminAddr == "" {
		c.AdminAddr = "127.0.0.1:9901"
	}
	if c.Gossip.BindAddr == "" {
		c.Gossip.BindAddr = "0.0.0.0:7946"
	}
	c.Gossip.Name = c.Name
	c.Ring = c.Ring.WithDefaults()
	c.TLS = c.TLS.withDefaults()
	c.ACME = c.ACME.withDefaults()
	c.HealthCheck = c.HealthCheck.WithDefaults()
	c.HealthPolicy = c.HealthPolicy.WithDefaults()
	if c.CoalesceQuiet <= 0 {
		c.CoalesceQuiet = 10 * time.Millisecond
	}
	if c.CoalesceMax <= 0 {
		c.CoalesceMax = 100 * time.Millisecond
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 32 << 10
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.DrainDelay == 0 {
		c.DrainDelay = time.Second
	}
	if c.DrainSpread == 0 {
		c.DrainSpread = 5 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.DrainCloseCode == 0 {
		c.DrainCloseCode = 1001
	}
	if c.LeaveTimeout <= 0 {
		c.LeaveTimeout = 5 * time.Second
	}
	if c.AnnounceDelay <= 0 {
		c.AnnounceDelay = 500 * time.Millisecond
	}
	if c.SyncTimeout <= 0 {
		c.SyncTimeout = 3 * time.Second
	}
	if c.Affinity.MaxAge == 0 {
		c.Affinity.MaxAge = DefaultAffinityMaxAge
	}
	c.Backends = append([]BackendSpec(nil), c.Backends...)
	c.BackendNetworks = append([]netip.Prefix(nil), c.BackendNetworks...)
	c.Gossip.Seeds = append([]string(nil), c.Gossip.Seeds...)
	c.AdminAllowedOrigins = append([]string(nil), c.AdminAllowedOrigins...)
	c.AdminHosts = append([]string(nil), c.AdminHosts...)
	return c
}

// shutdownSlack covers what a graceful stop does besides the drain and the
// leave's broadcast: announcing the leave in the meta (gossip waits up to a
// second for it to go out) and stopping gossip, which waits for a join in
// progress to give up, and the servers.
const shutdownSlack = 5 * time.Second

// ShutdownTimeout is the deadline to give Shutdown so that nothing is cut
// short: the drain delay, the drain timeout, the leave timeout, and a few
// seconds for the rest. Zero fields count at their defaults.
func (c Config) ShutdownTimeout() time.Duration {
	c = c.withDefaults()
	return max(c.DrainDelay, 0) + c.DrainTimeout + c.LeaveTimeout + shutdownSlack
}

func (c Config) validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if err := validateHostPort(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("listen address: %w", err))
	}
	if err := validateHostPort(c.AdminAddr); err != nil {
		errs = append(errs, fmt.Errorf("admin address: %w", err))
	}
	if c.AdvertiseProxy != "" {
		if err := validateHostPort(c.AdvertiseProxy); err != nil {
			errs = append(errs, fmt.Errorf("advertise proxy address: %w", err))
		}
	}
	if c.DNS.Addr == "" && (len(c.DNS.Names) > 0 || len(c.DNS.NS) > 0) {
		errs = append(errs, errors.New("dns names given without a dns listen address"))
	}
	if err := c.Ring.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, r := range c.Router.Routes {
		if err := gossip.ValidatePool(r.Pool); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
		}
	}
	if err := c.ACME.validate(c); err != nil {
		errs = append(errs, err)
	}
	if err := c.TLS.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.BackendTLS.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HealthCheck.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.HealthPolicy.Validate(); err != nil {
		errs = append(errs, err)
	}
	for _, p := range c.BackendNetworks {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("backend network %v is not a valid prefix", p))
		}
	}
	if c.DrainCloseCode != 1001 && c.DrainCloseCode != 1012 {
		errs = append(errs, fmt.Errorf("drain close code %d: want 1001 (going away) or 1012 (service restart)", c.DrainCloseCode))
	}
	errs = append(errs, c.Security.validate(c.AdminAddr, len(c.Gossip.SecretKey) > 0)...)
	if err := c.Affinity.validate(len(c.Gossip.SecretKey) > 0, c.Router.SessionCookie); err != nil {
		errs = append(errs, err)
	}
	seen := make(map[string]string, len(c.Backends))
	pools := make(map[string]string, len(c.Backends))
	for _, b := range c.Backends {
		if err := ring.ValidateID(b.ID); err != nil {
			errs = append(errs, fmt.Errorf("backend %q: %w", b.ID, err))
		}
		if err := validateBackendAddr(b.Addr); err != nil {
			errs = append(errs, fmt.Errorf("backend %q: %w", b.ID, err))
		}
		if b.Weight != 0 && b.Weight != 1 {
			if err := ring.ValidateWeight(b.Weight); err != nil {
				errs = append(errs, fmt.Errorf("backend %q: %w", b.ID, err))
			}
		}
		if b.Pool != "" {
			if err := gossip.ValidatePool(b.Pool); err != nil {
				errs = append(errs, fmt.Errorf("backend %q: %w", b.ID, err))
			}
		}
		if prev, dup := seen[b.ID]; dup && prev != b.Addr {
			errs = append(errs, fmt.Errorf("backend %q given twice with different addresses (%s, %s)", b.ID, prev, b.Addr))
		}
		if prev, dup := pools[b.ID]; dup && prev != b.pool() {
			errs = append(errs, fmt.Errorf("backend %q given twice in different pools (%s, %s)", b.ID, prev, b.pool()))
		}
		seen[b.ID], pools[b.ID] = b.Addr, b.pool()
	}
	return errors.Join(errs...)
}

// validateHostPort accepts "host:port" and ":port" with a numeric port.
func validateHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port %q is not a number in 0..65535", s, port)
	}
	return nil
}

// validateBackendAddr is stricter than validateHostPort: a backend needs a
// host and a real port, written as every peer will accept it.
func validateBackendAddr(s string) error { return gossip.ValidateAddr(s) }
