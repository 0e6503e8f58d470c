package meshdns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

const (
	// MinTTL is the TTL of answers given while degraded (stale, unready,
	// alone): long enough to spare a resolver a query per connection,
	// short enough that it asks again once the mesh has healed.
	MinTTL = time.Second
	// MaxQuery bounds a query's size. A real query is a name (at most 255
	// bytes), a header, a question and an OPT record: well under 512.
	MaxQuery = 512
	// maxUDPAnswer is the largest UDP response we send whatever the
	// client's EDNS0 buffer, the size DNS Flag Day 2020 settled on to
	// avoid IP fragmentation.
	maxUDPAnswer = 1232
)

// NS is a name server of the zones: a name and, when the name is inside a
// zone, the address given as glue.
type NS struct {
	Name string     // fully qualified, lower case
	Addr netip.Addr // the glue; invalid when the name is outside the zones
}

// ParseNS parses "name" or "name=ip".
func ParseNS(s string) (NS, error) {
	name, addr, hasAddr := strings.Cut(strings.TrimSpace(s), "=")
	ns := NS{Name: canonical(name)}
	if _, ok := dns.IsDomainName(ns.Name); !ok || ns.Name == "." {
		return NS{}, fmt.Errorf("name server %q: not a domain name", s)
	}
	if hasAddr {
		a, err := netip.ParseAddr(strings.TrimSpace(addr))
		if err != nil {
			return NS{}, fmt.Errorf("name server %q: %w", s, err)
		}
		ns.Addr = a.Unmap()
	}
	return ns, nil
}

// Config configures a Server. A zero field means its documented default.
type Config struct {
	// Addr is the UDP and TCP listen address, host:port. Required; ":53"
	// needs CAP_NET_BIND_SERVICE.
	Addr string
	// Names are the zones answered, e.g. "ws.example.com". At least one.
	Names []string
	// TTL of the A and AAAA answers. Default 5 s: a dead node leaves the
	// mesh's answers within the failure detector's few seconds, and a
	// resolver holds the old answer about this much longer.
	TTL time.Duration
	// MaxAnswers bounds the addresses in one answer. Default 8: enough to
	// spread load and give a client fallbacks, small enough for 512 bytes.
	MaxAnswers int
	// NS are the zones' name servers. Default: the zone's own name, whose
	// A and AAAA records are the live nodes, which are its name servers.
	NS []NS
	// RateLimit is the UDP responses per second one client address gets,
	// RateBurst the burst above it. Defaults 100 and 200: a busy resolver
	// asks one name a few times per TTL, far below this.
	RateLimit float64
	RateBurst int
	// MaxTCPConns bounds the TCP connections served at once. Default 256.
	MaxTCPConns int
	// Logger gets the server's logs; nothing is logged per query above
	// debug. Default: discard.
	Logger zerolog.Logger
	// Registerer gets the server's metrics. Default: none.
	Registerer prometheus.Registerer
	// now is the clock, for tests. Default time.Now.
	now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.TTL <= 0 {
		c.TTL = 5 * time.Second
	}
	if c.MaxAnswers <= 0 {
		c.MaxAnswers = 8
	}
	if c.RateLimit <= 0 {
		c.RateLimit = 100
	}
	if c.RateBurst <= 0 {
		c.RateBurst = 200
	}
	if c.MaxTCPConns <= 0 {
		c.MaxTCPConns = 256
	}
	if c.now == nil {
		c.now = time.Now
	}
	names := make([]string, 0, len(c.Names))
	for _, n := range c.Names {
		names = append(names, canonical(n))
	}
	c.Names = names
	c.NS = append([]NS(nil), c.NS...)
	return c
}

func (c Config) validate() error {
	var errs []error
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("dns listen address %q is not host:port", c.Addr))
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("dns listen address %q: port is not a number in 0..65535", c.Addr))
	}
	if len(c.Names) == 0 {
		errs = append(errs, errors.New("dns: at least one name to answer is required"))
	}
	for _, n := range c.Names {
		if _, ok := dns.IsDomainName(n); !ok || n == "." {
			errs = append(errs, fmt.Errorf("dns name %q is not a domain name", n))
		}
	}
	if c.TTL < MinTTL {
		errs = append(errs, fmt.Errorf("dns ttl %v: at least %v", c.TTL, MinTTL))
	}
	if c.TTL > time.Hour {
		errs = append(errs, fmt.Errorf("dns ttl %v: at most 1h (a dead node would stay in caches that long)", c.TTL))
	}
	if c.MaxAnswers > 64 {
		errs = append(errs, fmt.Errorf("dns max answers %d: at most 64", c.MaxAnswers))
	}
	return errors.Join(errs...)
}

// canonical is a name in the form answers compare: fully qualified, lower
// case.
func canonical(name string) string { return dns.CanonicalName(strings.TrimSpace(name)) }
