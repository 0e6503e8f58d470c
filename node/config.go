package node

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/ring"
)

// BackendSpec is a backend given in the node's own configuration. Static
// backends are upserted into the mesh-wide catalog at start.
type BackendSpec struct {
	ID   string // defaults to Addr
	Addr string // host:port
}

// ParseBackendSpec parses "[id=]host:port".
func ParseBackendSpec(s string) (BackendSpec, error) {
	id, addr, found := strings.Cut(s, "=")
	if !found {
		addr = s
		id = s
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

// Config configures one node. A zero field means its documented default.
type Config struct {
	// Name is the node's unique name in the mesh. Required.
	Name string

	// ListenAddr is the proxy listener, host:port. Default ":8080".
	ListenAddr string

	// AdminAddr is the admin HTTP API, host:port. Default "127.0.0.1:9901":
	// the API can change the backend set, so it is not exposed unless asked.
	AdminAddr string

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

	// AnnounceDelay is how long after a ring swap the node publishes its new
	// ring fingerprint in its meta. Default 500 ms (see rebuildLoop).
	AnnounceDelay time.Duration

	// SyncTimeout bounds how long static backends wait for a first sync with
	// the mesh before being upserted anyway. Default 3 s.
	SyncTimeout time.Duration

	// Logger receives the node's logs. Default: discard.
	Logger zerolog.Logger
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
	if c.CoalesceQuiet <= 0 {
		c.CoalesceQuiet = 10 * time.Millisecond
	}
	if c.CoalesceMax <= 0 {
		c.CoalesceMax = 100 * time.Millisecond
	}
	if c.AnnounceDelay <= 0 {
		c.AnnounceDelay = 500 * time.Millisecond
	}
	if c.SyncTimeout <= 0 {
		c.SyncTimeout = 3 * time.Second
	}
	c.Backends = append([]BackendSpec(nil), c.Backends...)
	c.Gossip.Seeds = append([]string(nil), c.Gossip.Seeds...)
	return c
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
	if err := c.Ring.Validate(); err != nil {
		errs = append(errs, err)
	}
	seen := make(map[string]string, len(c.Backends))
	for _, b := range c.Backends {
		if err := ring.ValidateID(b.ID); err != nil {
			errs = append(errs, fmt.Errorf("backend %q: %w", b.ID, err))
		}
		if err := validateBackendAddr(b.Addr); err != nil {
			errs = append(errs, fmt.Errorf("backend %q: %w", b.ID, err))
		}
		if prev, dup := seen[b.ID]; dup && prev != b.Addr {
			errs = append(errs, fmt.Errorf("backend %q given twice with different addresses (%s, %s)", b.ID, prev, b.Addr))
		}
		seen[b.ID] = b.Addr
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
// host and a real port.
func validateBackendAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q: host is empty", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port %q is not a number in 1..65535", s, port)
	}
	return nil
}
