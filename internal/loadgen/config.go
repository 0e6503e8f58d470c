package loadgen

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Config configures one bench run. A zero field means its documented
// default; New validates the rest.
type Config struct {
	// Nodes are node proxy addresses, host:port, tried in DNS round-robin
	// order. A host that is a name is resolved at every connect.
	Nodes []string
	// Target is one DNS name and port (name:port) whose A/AAAA records are
	// the nodes, resolved again at most once per second, as a client behind
	// DNS round robin would. Nodes, Target or both must be set.
	Target string

	// Admin are admin API addresses (host:port or http(s)://host:port) of
	// nodes; the first that answers is polled for GET /v1/backends. Without
	// them the checker cannot know the backend set and every move of a
	// session to another backend counts as a misroute.
	Admin []string
	// AdminToken, if set, is sent to the admin API as a bearer token (a
	// read token is enough).
	AdminToken string
	// PollInterval is how often the backend set is polled. Default 500 ms.
	PollInterval time.Duration
	// ProbeBackends also dials every in-ring backend at each poll and
	// leaves out of the set those that failed two probes in a row: a mesh
	// fails a dead backend's sessions over to the next candidate at once,
	// a second or two before its health checks take it out of the ring,
	// and that move is legitimate.
	ProbeBackends bool
	// MoveWindow is how close to a backend-set change a move must be to be
	// blamed on it (before the last answer from the old backend, or after
	// the first from the new one). Default 5 s: gossip, the poll interval
	// and the ring rebuild all fit inside it.
	MoveWindow time.Duration

	// WaitReady, if positive, makes Run first wait, at most this long,
	// until an admin API reports its node ready, with a ring that every
	// node agrees on and at least WaitMembers members (default 1). Useful
	// when the mesh starts together with the bench (Docker Compose). Needs
	// Admin.
	WaitReady   time.Duration
	WaitMembers int

	// Path is the WebSocket path, optionally with a query. Default "/".
	Path string
	// KeyParam is the query parameter carrying the session ID. Default
	// "session_id".
	KeyParam string
	// SessionPrefix prefixes session IDs ("<prefix><n>"). Default
	// "bench-<seed in hex>-", so a seed names the same sessions again.
	SessionPrefix string

	// Sessions is the number of concurrent sessions. Default 100.
	Sessions int
	// Duration is how long the run lasts, ramp included. Default 30 s.
	Duration time.Duration
	// Rate is how many sessions open per second during the ramp (first
	// connects only; reconnects follow their own backoff). Default 200.
	Rate float64
	// WhoamiInterval is how often each session asks whoami and echoes its
	// payload. Default 1 s.
	WhoamiInterval time.Duration
	// PayloadSize is the size of the echoed binary message. Default 64.
	PayloadSize int
	// Seed drives session IDs, payloads and jitter. Zero picks one at
	// random (the report shows it).
	Seed uint64

	// ConnectTimeout bounds a TCP connect plus WebSocket handshake.
	// Default 5 s.
	ConnectTimeout time.Duration
	// RequestTimeout bounds one whoami or echo round trip; past it the
	// session counts an error and reconnects. Default 5 s.
	RequestTimeout time.Duration
	// BackoffMin and BackoffMax bound the exponential reconnect backoff
	// (equal jitter: a wait in [d/2, d]). Defaults 100 ms and 5 s.
	BackoffMin, BackoffMax time.Duration
	// NodeCooldown is how long a node that refused a connect is skipped by
	// every session, as a client skips a dead DNS answer. Default 2 s.
	NodeCooldown time.Duration

	// SourceIPs are local addresses that sessions bind to, round robin,
	// so thousands of connections to one loopback port don't exhaust the
	// ephemeral ports of one source address. Nil: AutoSourceIPs decides.
	SourceIPs []netip.Addr
	// NoSourceIPs disables binding even where AutoSourceIPs would.
	NoSourceIPs bool

	// Resolver resolves Target and node names. Default net.DefaultResolver.
	Resolver *net.Resolver
	// Logger receives debug detail (per connection) and warnings; nothing
	// at info per message. Default: discard.
	Logger zerolog.Logger
}

func (c Config) withDefaults() Config {
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.MoveWindow <= 0 {
		c.MoveWindow = 5 * time.Second
	}
	if c.WaitMembers <= 0 {
		c.WaitMembers = 1
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.KeyParam == "" {
		c.KeyParam = "session_id"
	}
	if c.Sessions <= 0 {
		c.Sessions = 100
	}
	if c.Duration <= 0 {
		c.Duration = 30 * time.Second
	}
	if c.Rate <= 0 {
		c.Rate = 200
	}
	if c.WhoamiInterval <= 0 {
		c.WhoamiInterval = time.Second
	}
	if c.PayloadSize <= 0 {
		c.PayloadSize = 64
	}
	if c.Seed == 0 {
		// Small enough to type back in, and exact in any JSON reader.
		c.Seed = rand.Uint64N(1<<31) + 1
	}
	if c.SessionPrefix == "" {
		c.SessionPrefix = fmt.Sprintf("bench-%x-", c.Seed)
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 100 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 5 * time.Second
	}
	if c.NodeCooldown <= 0 {
		c.NodeCooldown = 2 * time.Second
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	c.Nodes = append([]string(nil), c.Nodes...)
	c.Admin = append([]string(nil), c.Admin...)
	c.SourceIPs = append([]netip.Addr(nil), c.SourceIPs...)
	return c
}

func (c Config) validate() error {
	var errs []error
	if len(c.Nodes) == 0 && c.Target == "" {
		errs = append(errs, errors.New("no nodes: give nodes, a target or both"))
	}
	for _, n := range c.Nodes {
		if err := checkHostPort(n); err != nil {
			errs = append(errs, fmt.Errorf("node %w", err))
		}
	}
	if c.Target != "" {
		if err := checkHostPort(c.Target); err != nil {
			errs = append(errs, fmt.Errorf("target %w", err))
		}
	}
	for _, a := range c.Admin {
		if _, err := adminURL(a); err != nil {
			errs = append(errs, err)
		}
	}
	if c.WaitReady > 0 && len(c.Admin) == 0 {
		errs = append(errs, errors.New("waiting for the mesh to be ready needs an admin address"))
	}
	if !strings.HasPrefix(c.Path, "/") {
		errs = append(errs, fmt.Errorf("path %q must start with /", c.Path))
	}
	if c.BackoffMin > c.BackoffMax {
		errs = append(errs, fmt.Errorf("backoff min %v is above max %v", c.BackoffMin, c.BackoffMax))
	}
	if c.PayloadSize > 1<<20 {
		errs = append(errs, fmt.Errorf("payload of %d bytes: the echo backend takes at most 1 MiB", c.PayloadSize))
	}
	return errors.Join(errs...)
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port must be 1..65535", s)
	}
	return nil
}

// adminURL turns "host:port" or "http(s)://host:port[/]" into a base URL.
func adminURL(s string) (string, error) {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return strings.TrimRight(s, "/"), nil
	}
	if err := checkHostPort(s); err != nil {
		return "", fmt.Errorf("admin %w", err)
	}
	return "http://" + s, nil
}

// ParseSourceIPs parses a comma-separated list of addresses and inclusive
// IPv4 ranges: "127.0.0.2-127.0.0.50,127.0.1.1". At most 65536 addresses.
func ParseSourceIPs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("source address %q: %w", lo, err)
		}
		if !isRange {
			out = append(out, first)
			continue
		}
		last, err := netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil {
			return nil, fmt.Errorf("source address %q: %w", hi, err)
		}
		if !first.Is4() || !last.Is4() || last.Less(first) {
			return nil, fmt.Errorf("source range %q: want two IPv4 addresses, low-high", part)
		}
		for a := first; ; a = a.Next() {
			out = append(out, a)
			if len(out) > 1<<16 {
				return nil, fmt.Errorf("source range %q: more than 65536 addresses", part)
			}
			if a == last {
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no source addresses")
	}
	return out, nil
}

// sessionsPerSource is how many sessions AutoSourceIPs puts on one source
// address: well below the ~28,000 ephemeral ports of Linux's default range,
// leaving room for reconnects while old sockets sit in TIME_WAIT.
const sessionsPerSource = 4000

// AutoSourceIPs returns the source addresses to bind when the caller gave
// none: on Linux, with every node on IPv4 loopback and more sessions than
// one source address carries comfortably, 127.0.0.1 upward, one address
// per sessionsPerSource sessions (all of 127/8 answers on Linux's lo).
// Otherwise nil: let the kernel choose.
func AutoSourceIPs(nodes []string, sessions int) []netip.Addr {
	if runtime.GOOS != "linux" || len(nodes) == 0 || sessions <= sessionsPerSource {
		return nil
	}
	for _, n := range nodes {
		host, _, err := net.SplitHostPort(n)
		if err != nil {
			return nil
		}
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is4() || !a.IsLoopback() {
			return nil
		}
	}
	k := min((sessions+sessionsPerSource-1)/sessionsPerSource, 250)
	out := make([]netip.Addr, 0, k)
	a := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	for range k {
		out = append(out, a)
		a = a.Next()
	}
	return out
}
