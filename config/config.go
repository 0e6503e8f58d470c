// Package config turns command-line flags, MESHLB_* environment variables
// and a YAML file into a node.Config, in that order of precedence (flags
// win). Every option has one name used three ways: the flag --gossip-addr,
// the variable MESHLB_GOSSIP_ADDR and the YAML key gossip-addr (options
// named ring-* may also be nested: ring: {seed: ...}). Errors name the
// option and where its bad value came from.
package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/health"
	"github.com/meshlb/meshlb/meshdns"
	"github.com/meshlb/meshlb/node"
	"github.com/meshlb/meshlb/ring"
	"github.com/meshlb/meshlb/router"
)

// UsageError is a bad flag, value or config file: the command exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(format string, a ...any) error { return &UsageError{fmt.Errorf(format, a...)} }

// Node is everything `meshlb node` needs.
type Node struct {
	Node      node.Config
	LogLevel  zerolog.Level
	LogFormat string // auto, json or console
	// Raw holds each option's effective values, by option name, as
	// resolved from flag, environment, file or default: what a reload
	// compares (Changed). It may hold secrets and must not be logged.
	Raw map[string][]string
}

type option struct {
	name  string
	usage string
	def   string
	list  bool
	flag  bool // a boolean flag: --name alone means true
	apply func(c *Node, v string) error
}

// maxConfigFile bounds the config file we read: a real one is a few kB.
const maxConfigFile = 1 << 20

func nodeOptions() []option {
	return []option{
		{name: "config", usage: "YAML config file; its keys are the flag names (ring-* may be nested under ring:)"},
		{name: "name", usage: "unique node name in the mesh (default: the host name)", apply: func(c *Node, v string) error {
			if v == "" {
				return errors.New("must not be empty")
			}
			c.Node.Name = v
			return nil
		}},
		{name: "gossip-addr", def: "0.0.0.0:7946", usage: "host:port to bind gossip (UDP and TCP) to", apply: hostPort(func(c *Node, v string) { c.Node.Gossip.BindAddr = v })},
		{name: "advertise-addr", usage: "host:port peers use to reach this node's gossip (default: derived from --gossip-addr)", apply: hostPort(func(c *Node, v string) { c.Node.Gossip.AdvertiseAddr = v })},
		{name: "join", list: true, usage: "seed host:port to join; repeat or comma-separate; a DNS name with several addresses joins them all", apply: func(c *Node, v string) error {
			for s := range strings.SplitSeq(v, ",") {
				s = strings.TrimSpace(s)
				if s == "" {
					continue
				}
				if err := checkHostPort(s); err != nil {
					return err
				}
				c.Node.Gossip.Seeds = append(c.Node.Gossip.Seeds, s)
			}
			return nil
		}},
		{name: "listen", def: ":8080", usage: "host:port of the proxy listener", apply: hostPort(func(c *Node, v string) { c.Node.ListenAddr = v })},
		{name: "advertise-proxy", usage: "host:port clients reach this node's proxy at, published in node meta and answered by DNS (default: --listen; an unspecified host takes the gossip advertise host)", apply: hostPort(func(c *Node, v string) { c.Node.AdvertiseProxy = v })},
		{name: "dns-listen", usage: "host:port to answer DNS on, UDP and TCP, for the --dns-name zones (off by default; :53 needs CAP_NET_BIND_SERVICE)", apply: hostPort(func(c *Node, v string) { c.Node.DNS.Addr = v })},
		{name: "dns-name", list: true, usage: "a name (zone) DNS answers with the live, ready nodes, like ws.example.com; repeat or comma-separate", apply: func(c *Node, v string) error {
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					c.Node.DNS.Names = append(c.Node.DNS.Names, s)
				}
			}
			return nil
		}},
		{name: "dns-ttl", def: "5s", usage: "TTL of DNS answers (degraded answers get 1s)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.DNS.TTL = d })},
		{name: "dns-max-answers", def: "8", usage: "most addresses in one DNS answer (a random subset per query)", apply: posInt(func(c *Node, v int) { c.Node.DNS.MaxAnswers = v })},
		{name: "dns-ns", list: true, usage: "name server of the zones, name or name=ip (glue, for a name inside a zone); repeatable (default: the zone's own name, the nodes its glue)", apply: func(c *Node, v string) error {
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				ns, err := meshdns.ParseNS(s)
				if err != nil {
					return err
				}
				c.Node.DNS.NS = append(c.Node.DNS.NS, ns)
			}
			return nil
		}},
		{name: "dns-rate-limit", def: "100", usage: "UDP DNS responses per second per client address (IPv6: per /64); past it most are dropped", apply: posInt(func(c *Node, v int) { c.Node.DNS.RateLimit = float64(v) })},
		{name: "admin", def: "127.0.0.1:9901", usage: "host:port of the admin HTTP API (it can change backends: keep it private)", apply: hostPort(func(c *Node, v string) { c.Node.AdminAddr = v })},
		{name: "pprof", flag: true, usage: "serve Go's profiler at /debug/pprof/ on the admin address", apply: boolean(func(c *Node, b bool) { c.Node.Pprof = b })},
		{name: "access-log", def: "off", usage: "one JSON line per HTTP request and per WebSocket session at its end: a file (reopened on SIGHUP), stdout, or off", apply: func(c *Node, v string) error {
			if strings.TrimSpace(v) == "" {
				return fmt.Errorf("%q: want a path, stdout or off", v)
			}
			c.Node.AccessLog = v
			return nil
		}},
		{name: "access-log-keys", flag: true, usage: "write the raw routing key (a session ID is a credential) in access log lines, not only its hash", apply: boolean(func(c *Node, b bool) { c.Node.AccessLogKeys = b })},
		{name: "backend", list: true, usage: "static backend [id=]host:port[,weight=1-100][,pool=NAME]; repeat or comma-separate", apply: func(c *Node, v string) error {
			bs, err := ParseBackends(v)
			c.Node.Backends = append(c.Node.Backends, bs...)
			return err
		}},
		{name: "backend-networks", usage: "CIDRs backends must be in, comma-separated: the admin API refuses others (400) and no node connects to them (default: any; the node's own listeners are refused always)", apply: func(c *Node, v string) error {
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return fmt.Errorf("%q is not a CIDR like 10.0.0.0/8", s)
				}
				c.Node.BackendNetworks = append(c.Node.BackendNetworks, p.Masked())
			}
			return nil
		}},
		{name: "gossip-key", usage: "base64 of a 16, 24 or 32-byte key encrypting gossip; every node needs the same", apply: func(c *Node, v string) error {
			k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("not base64: %w", err)
			}
			if n := len(k); n != 16 && n != 24 && n != 32 {
				return fmt.Errorf("decodes to %d bytes; want 16, 24 or 32", n)
			}
			c.Node.Gossip.SecretKey = k
			return nil
		}},
		{name: "allow-config-drift", flag: true, usage: "serve even while this node's ring or key settings differ from the mesh's (for a deliberate rolling change of them; otherwise such a node is not ready and answers 503)", apply: boolean(func(c *Node, b bool) { c.Node.AllowConfigDrift = b })},
		{name: "ring-partitions", def: strconv.Itoa(ring.DefaultPartitions), usage: "ring partitions (mesh-wide; defaults chosen by measurement: ring/DEFAULTS.md)", apply: posInt(func(c *Node, v int) { c.Node.Ring.Partitions = v })},
		{name: "ring-replication", def: strconv.Itoa(ring.DefaultReplicationFactor), usage: "virtual nodes per backend (mesh-wide)", apply: posInt(func(c *Node, v int) { c.Node.Ring.ReplicationFactor = v })},
		{name: "ring-load", def: strconv.FormatFloat(ring.DefaultLoad, 'g', -1, 64), usage: "bounded-load factor, >= 1 (mesh-wide)", apply: func(c *Node, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("%q is not a number", v)
			}
			c.Node.Ring.Load = f
			return nil
		}},
		{name: "ring-algorithm", def: ring.DefaultAlgorithm, usage: "v1 (the library's bounded-load ring) or v2 (grouped, kept for meshes that use it); mesh-wide, see ring/DEFAULTS.md before changing it", apply: func(c *Node, v string) error { c.Node.Ring.Algorithm = v; return nil }},
		{name: "ring-seed", usage: "secret keying the ring's hash so outsiders can't aim keys at one backend (mesh-wide)", apply: func(c *Node, v string) error {
			c.Node.Ring.Seed = v
			return nil
		}},
		{name: "route", list: true, usage: "send requests to a pool by host and path prefix: 'host=NAME,path=/PREFIX,pool=NAME' (host exact or *.suffix, both optional; the most specific host, then the longest path wins; no match: pool default); repeat, or separate with ; (mesh-wide)", apply: func(c *Node, v string) error {
			for s := range strings.SplitSeq(v, ";") {
				if strings.TrimSpace(s) == "" {
					continue
				}
				r, err := router.ParseRoute(s)
				if err != nil {
					return err
				}
				if err := gossip.ValidatePool(r.Pool); err != nil {
					return fmt.Errorf("route %q: %w", s, err)
				}
				c.Node.Router.Routes = append(c.Node.Router.Routes, r)
			}
			return nil
		}},
		{name: "pool-route-key", list: true, usage: "NAME=SOURCES: the routing-key sources of pool NAME's requests, as --route-key (e.g. rides=query:ride_id,ip; mesh-wide)", apply: func(c *Node, v string) error {
			pool, src, err := poolValue(v)
			if err != nil {
				return err
			}
			if src == "" {
				return fmt.Errorf("%q: want NAME=SOURCES, like rides=query:ride_id,ip", v)
			}
			if c.Node.Router.PoolKeySources == nil {
				c.Node.Router.PoolKeySources = map[string]string{}
			}
			c.Node.Router.PoolKeySources[pool] = src
			return nil
		}},
		{name: "route-key", def: router.DefaultKeySources, usage: "ordered routing-key sources: query:NAME, cookie:NAME, header:NAME, protocol:PREFIX (a Sec-WebSocket-Protocol token), ip (mesh-wide)", apply: func(c *Node, v string) error {
			c.Node.Router.Key.Sources = v
			return nil
		}},
		{name: "trusted-proxies", usage: "CIDRs or IPs whose X-Forwarded-For / Forwarded (and PROXY protocol) are believed, comma-separated", apply: func(c *Node, v string) error {
			p, err := router.ParseTrustedProxies(v)
			if err != nil {
				return err
			}
			c.Node.Router.Key.TrustedProxies = p
			return nil
		}},
		{name: "proxy-protocol", flag: true, usage: "expect a PROXY protocol v1/v2 header from --trusted-proxies", apply: boolean(func(c *Node, b bool) { c.Node.ProxyProtocol = b })},
		{name: "ipv6-prefix", def: "64", usage: "IPv6 clients are keyed by this prefix length, 1-128 (mesh-wide)", apply: posInt(func(c *Node, v int) { c.Node.Router.Key.IPv6Prefix = v })},
		{name: "affinity-cookie", usage: "pin each client to the backend that served it with this signed cookie, honoured by every node (mesh-wide; needs --gossip-key)", apply: func(c *Node, v string) error { c.Node.Affinity.Cookie = v; return nil }},
		{name: "affinity-max-age", def: "24h", usage: "lifetime of the affinity cookie (mesh-wide)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.Affinity.MaxAge = d })},
		{name: "slow-start", usage: "ramp a backend added to the catalog onto its keys over this time (mesh-wide; default off)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.SlowStart = d })},
		{name: "session-cookie", usage: "issue a random session ID in this cookie to a client without a key, and route by it", apply: func(c *Node, v string) error {
			c.Node.Router.SessionCookie = v
			return nil
		}},
		{name: "session-cookie-max-age", def: "24h", usage: "Max-Age of the session cookie; 0 for a browser-session cookie", apply: duration(func(c *Node, d time.Duration) {
			if d == 0 {
				d = -1 // the router's "no Max-Age"
			}
			c.Node.Router.SessionCookieMaxAge = d
		})},
		{name: "retries", def: "2", usage: "further ring candidates tried when a backend refuses or fails before answering", apply: func(c *Node, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 100 {
				return fmt.Errorf("%q is not a number in 0..100", v)
			}
			c.Node.Router.Retries = n
			if n == 0 {
				c.Node.Router.Retries = -1 // the router's "none"
			}
			return nil
		}},
		{name: "max-header-bytes", def: "32768", usage: "largest request header block; larger gets 431", apply: posInt(func(c *Node, v int) { c.Node.MaxHeaderBytes = v })},
		{name: "handshake-timeout", def: "10s", usage: "time a client has to send its request headers; later gets 408", apply: posDuration(func(c *Node, d time.Duration) { c.Node.HandshakeTimeout = d })},
		{name: "max-conns", def: "auto", usage: "concurrent proxied requests and WebSockets per node; past it 503 (auto: half the open-file limit left after a reserve for gossip, health checks, DNS and admin; 0: unlimited)", apply: func(c *Node, v string) error {
			if v == "auto" {
				c.Node.Router.MaxConns = 0 // the node's "derive it"
				return nil
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not auto or a number >= 0", v)
			}
			c.Node.Router.MaxConns = n
			if n == 0 {
				c.Node.Router.MaxConns = -1 // the node's "unlimited"
			}
			return nil
		}},
		{name: "backend-connect-timeout", def: "3s", usage: "time a TCP connect to a backend may take before the next candidate is tried", apply: posDuration(func(c *Node, d time.Duration) { c.Node.Router.DialTimeout = d })},
		{name: "backend-response-timeout", def: "60s", usage: "time an HTTP backend has to send its response headers; later gets 504", apply: posDuration(func(c *Node, d time.Duration) { c.Node.Router.ResponseHeaderTimeout = d })},
		{name: "ws-handshake-backend-timeout", def: "10s", usage: "time the WebSocket handshake with the backends may take, failover included; later gets 504", apply: posDuration(func(c *Node, d time.Duration) { c.Node.Router.HandshakeTimeout = d })},
		{name: "tunnel-idle-timeout", def: "1h", usage: "close a WebSocket with no frame either way for this long with 1001 (0: off)", apply: duration(func(c *Node, d time.Duration) { c.Node.Router.WSIdleTimeout = d })},
		// Kept for scripts written before --tunnel-idle-timeout; no default
		// of its own so that it overrides only when given.
		{name: "ws-idle-timeout", usage: "alias of --tunnel-idle-timeout", apply: duration(func(c *Node, d time.Duration) { c.Node.Router.WSIdleTimeout = d })},
		{name: "ws-ping-interval", def: "30s", usage: "ping WebSocket clients this often, so half-open connections are found (0: off)", apply: duration(func(c *Node, d time.Duration) { c.Node.Router.WSPingInterval = d })},
		{name: "ws-write-timeout", def: "30s", usage: "close a WebSocket whose client or backend takes no byte for this long (a live client gets 1008)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.Router.WSWriteTimeout = d })},
		{name: "ws-max-frame-size", def: "67108864", usage: "largest client frame payload, in bytes; a larger one closes the WebSocket with 1009", apply: func(c *Node, v string) error {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("%q is not a byte count > 0", v)
			}
			c.Node.Router.WSMaxFrameSize = n
			return nil
		}},
		{name: "http-write-timeout", def: "60s", usage: "close an HTTP response whose client takes no byte of it for this long (progress, not the whole response)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.Router.HTTPWriteTimeout = d })},
		{name: "drain-delay", def: "1s", usage: "on SIGTERM, keep serving this long after turning unready", apply: duration(func(c *Node, d time.Duration) { c.Node.DrainDelay = orNegative(d) })},
		{name: "drain-spread", def: "5s", usage: "on SIGTERM, close WebSockets spread over this window, with jitter", apply: duration(func(c *Node, d time.Duration) { c.Node.DrainSpread = orNegative(d) })},
		{name: "drain-timeout", def: "30s", usage: "on SIGTERM, the longest wait for WebSockets and HTTP requests to finish", apply: posDuration(func(c *Node, d time.Duration) { c.Node.DrainTimeout = d })},
		{name: "leave-timeout", def: "5s", usage: "on SIGTERM, after the drain, the longest wait for the mesh to hear this node leave", apply: posDuration(func(c *Node, d time.Duration) { c.Node.LeaveTimeout = d })},
		{name: "drain-close-code", def: "1001", usage: "WebSocket close code sent on drain: 1001 (going away) or 1012 (service restart)", apply: func(c *Node, v string) error {
			switch v {
			case "1001", "1012":
				n, _ := strconv.Atoi(v)
				c.Node.DrainCloseCode = uint16(n)
				return nil
			}
			return fmt.Errorf("%q: want 1001 or 1012", v)
		}},
		{name: "health-interval", def: "1s", usage: "time between checks of a backend (this node's own; may differ per node)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.HealthCheck.Interval = d })},
		{name: "health-fast-interval", usage: "time between checks while a backend is changing state, like HAProxy's fastinter (default: a quarter of --health-interval)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.HealthCheck.FastInterval = d })},
		{name: "health-timeout", def: "500ms", usage: "time a check may take", apply: posDuration(func(c *Node, d time.Duration) { c.Node.HealthCheck.Timeout = d })},
		{name: "health-rise", def: "2", usage: "consecutive successful checks that bring a backend up", apply: posInt(func(c *Node, v int) { c.Node.HealthCheck.Rise = v })},
		{name: "health-fall", def: "2", usage: "consecutive failed checks (or router connect failures) that take a backend down", apply: posInt(func(c *Node, v int) { c.Node.HealthCheck.Fall = v })},
		{name: "health-http", usage: "check with an HTTP GET of this path instead of a TCP connect, e.g. /healthz", apply: func(c *Node, v string) error {
			if !strings.HasPrefix(v, "/") {
				return fmt.Errorf("%q: want an absolute path like /healthz", v)
			}
			c.Node.HealthCheck.HTTPPath = v
			return nil
		}},
		{name: "pool-health-http", list: true, usage: "NAME=/PATH: the health check of pool NAME's backends is an HTTP GET of PATH (NAME= alone: a TCP connect), whatever --health-http says", apply: func(c *Node, v string) error {
			pool, path, err := poolValue(v)
			if err != nil {
				return err
			}
			if path != "" && !strings.HasPrefix(path, "/") {
				return fmt.Errorf("%q: want NAME=/PATH with an absolute path like /healthz", v)
			}
			if c.Node.HealthCheck.PoolHTTPPath == nil {
				c.Node.HealthCheck.PoolHTTPPath = map[string]string{}
			}
			c.Node.HealthCheck.PoolHTTPPath[pool] = path
			return nil
		}},
		{name: "health-http-status", def: "200-399", usage: "HTTP statuses a check accepts: a range or one status", apply: func(c *Node, v string) error {
			lo, hi, err := health.ParseStatusRange(v)
			if err != nil {
				return err
			}
			c.Node.HealthCheck.StatusMin, c.Node.HealthCheck.StatusMax = lo, hi
			return nil
		}},
		{name: "health-quorum", def: "majority", usage: "live nodes that must see a backend down to take it out: majority, all, or a count (mesh-wide)", apply: func(c *Node, v string) error {
			switch v {
			case "majority":
				c.Node.HealthPolicy.Quorum = 0
			case "all":
				c.Node.HealthPolicy.Quorum = -1
			default:
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					return fmt.Errorf("%q: want majority, all or a count >= 1", v)
				}
				c.Node.HealthPolicy.Quorum = n
			}
			return nil
		}},
		{name: "max-eject-percent", def: "50", usage: "most backends, in percent, that health may take out; past it they stay in, reported over budget (mesh-wide)", apply: func(c *Node, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 100 {
				return fmt.Errorf("%q is not a number in 0..100", v)
			}
			c.Node.HealthPolicy.MaxEjectPercent = n
			if n == 0 {
				c.Node.HealthPolicy.MaxEjectPercent = health.NoEjection
			}
			return nil
		}},
		{name: "health-flap-threshold", def: "3", usage: "the ejection, within --health-flap-window, from which a flapping backend is held out (mesh-wide)", apply: posInt(func(c *Node, v int) { c.Node.HealthPolicy.FlapThreshold = v })},
		{name: "health-flap-window", def: "2m", usage: "a backend back this long is stable: its next ejection counts as the first (mesh-wide)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.HealthPolicy.FlapWindow = d })},
		{name: "health-hold", def: "10s", usage: "first hold of a flapping backend: it must be seen up this long to return; doubles with each ejection (mesh-wide)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.HealthPolicy.HoldBase = d })},
		{name: "health-max-hold", def: "5m", usage: "longest hold of a flapping backend (mesh-wide)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.HealthPolicy.HoldMax = d })},
		{name: "log-level", def: "info", usage: "debug, info, warn or error", apply: func(c *Node, v string) error {
			l, err := zerolog.ParseLevel(v)
			if err != nil || v == "" {
				return fmt.Errorf("%q is not one of debug, info, warn, error", v)
			}
			c.LogLevel = l
			return nil
		}},
		{name: "log-format", def: "auto", usage: "auto (console on a terminal, else JSON), json or console", apply: func(c *Node, v string) error {
			switch v {
			case "auto", "json", "console":
				c.LogFormat = v
				return nil
			}
			return fmt.Errorf("%q is not one of auto, json, console", v)
		}},
	}
}

func hostPort(set func(*Node, string)) func(*Node, string) error {
	return func(c *Node, v string) error {
		if err := checkHostPort(v); err != nil {
			return err
		}
		set(c, v)
		return nil
	}
}

func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not host:port (IPv6 hosts go in brackets)", v)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be a number in 0..65535", v)
	}
	return nil
}

// orNegative maps a user's 0 ("none") onto the node's negative "none",
// since a zero field there means "default".
func orNegative(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// duration parses a duration >= 0; posDuration one > 0.
func duration(set func(*Node, time.Duration)) func(*Node, string) error {
	return durationFrom(0, set)
}

func posDuration(set func(*Node, time.Duration)) func(*Node, string) error {
	return durationFrom(time.Nanosecond, set)
}

func durationFrom(least time.Duration, set func(*Node, time.Duration)) func(*Node, string) error {
	return func(c *Node, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < least {
			return fmt.Errorf("%q is not a duration >= %v (like 500ms, 10s, 1m)", v, least)
		}
		set(c, d)
		return nil
	}
}

func boolean(set func(*Node, bool)) func(*Node, string) error {
	return func(c *Node, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		set(c, b)
		return nil
	}
}

func posInt(set func(*Node, int)) func(*Node, string) error {
	return func(c *Node, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a positive integer", v)
		}
		set(c, n)
		return nil
	}
}

// EnvName is the environment variable of an option.
func EnvName(option string) string {
	return "MESHLB_" + strings.ToUpper(strings.ReplaceAll(option, "-", "_"))
}

// ParseNode reads `meshlb node` arguments, environment (as from os.Environ)
// and the config file they name. flag.ErrHelp is returned after --help has
// printed the usage to out.
func ParseNode(args, environ []string, out io.Writer) (Node, error) {
	opts := append(append(append(nodeOptions(), tlsOptions()...), securityOptions()...), acmeOptions()...)
	fs := flag.NewFlagSet("meshlb node", flag.ContinueOnError)
	// A mistyped flag gets one line and a hint (the caller prints the
	// UsageError), not the whole help: the flag package would print both.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fromFlags := map[string][]string{}
	for _, o := range opts {
		if o.flag {
			fs.BoolFunc(o.name, o.usage, func(v string) error {
				fromFlags[o.name] = []string{v}
				return nil
			})
			continue
		}
		fs.Func(o.name, o.usage, func(v string) error {
			if o.list {
				fromFlags[o.name] = append(fromFlags[o.name], v)
			} else {
				fromFlags[o.name] = []string{v}
			}
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(out, opts)
			return Node{}, err
		}
		return Node{}, usageErrorf("%w (see meshlb node --help)", err)
	}
	if fs.NArg() > 0 {
		return Node{}, usageErrorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}

	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "MESHLB_") {
			env[k] = v
		}
	}
	known := map[string]bool{}
	for _, o := range opts {
		known[EnvName(o.name)] = true
	}
	for k := range env {
		if !known[k] && k != "MESHLB_ADMIN_URL" {
			return Node{}, usageErrorf("environment %s: unknown option", k)
		}
	}

	var fromFile map[string][]string
	path := ""
	if v, ok := fromFlags["config"]; ok {
		path = v[0]
	} else if v, ok := env[EnvName("config")]; ok {
		path = v
	}
	if path != "" {
		b, err := readLimited(path)
		if err != nil {
			return Node{}, usageErrorf("config file %s: %w", path, err)
		}
		if fromFile, err = ParseYAML(b, known); err != nil {
			return Node{}, usageErrorf("config file %s: %w", path, err)
		}
	}

	c := Node{Raw: map[string][]string{}}
	host, _ := os.Hostname()
	c.Node.Name = host
	for _, o := range opts {
		if o.apply == nil {
			continue
		}
		var vals []string
		var src string
		if v, ok := fromFlags[o.name]; ok {
			vals, src = v, "flag --"+o.name
		} else if v, ok := env[EnvName(o.name)]; ok {
			vals, src = []string{v}, "environment "+EnvName(o.name)
		} else if v, ok := fromFile[o.name]; ok {
			vals, src = v, fmt.Sprintf("config file %s: key %s", path, o.name)
		} else if o.def != "" {
			vals, src = []string{o.def}, "default of --"+o.name
		}
		c.Raw[o.name] = vals
		for _, v := range vals {
			if err := o.apply(&c, v); err != nil {
				return Node{}, usageErrorf("%s: %w", src, err)
			}
		}
	}
	if c.Node.Name == "" {
		return Node{}, usageErrorf("--name is required (the host name is unknown)")
	}
	if err := checkSecurity(c); err != nil {
		return Node{}, err
	}
	// Checked here rather than left to the node so that the message names
	// the options.
	if err := c.Node.Ring.Validate(); err != nil {
		return Node{}, usageErrorf("--ring-partitions, --ring-replication, --ring-load, --ring-seed: %w", err)
	}
	k := c.Node.Router.Key
	if k.SessionCookie == "" {
		k.SessionCookie = c.Node.Router.SessionCookie
	}
	if _, err := router.NewKeyExtractor(k); err != nil {
		return Node{}, usageErrorf("--route-key, --ipv6-prefix, --session-cookie: %w", err)
	}
	if err := router.CheckRoutes(c.Node.Router.Routes); err != nil {
		return Node{}, usageErrorf("--route: %w", err)
	}
	for pool, src := range c.Node.Router.PoolKeySources {
		pk := k
		pk.Sources = src
		if _, err := router.NewKeyExtractor(pk); err != nil {
			return Node{}, usageErrorf("--pool-route-key %s=%s: %w", pool, src, err)
		}
	}
	if err := c.Node.HealthCheck.WithDefaults().Validate(); err != nil {
		return Node{}, usageErrorf("--health-*: %w", err)
	}
	if err := c.Node.HealthPolicy.WithDefaults().Validate(); err != nil {
		return Node{}, usageErrorf("--health-hold, --health-max-hold, --health-quorum, --max-eject-percent: %w", err)
	}
	return c, nil
}

// Changed names the options whose effective values differ between old and
// new, in the order of --help.
func Changed(old, new Node) []string {
	var out []string
	for _, o := range append(append(nodeOptions(), tlsOptions()...), securityOptions()...) {
		if !slices.Equal(old.Raw[o.name], new.Raw[o.name]) {
			out = append(out, o.name)
		}
	}
	return out
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxConfigFile {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigFile)
	}
	return b, nil
}

// ParseYAML flattens a YAML mapping into option values. Nested mappings join
// their keys with "-" (ring: {seed: x} is ring-seed); sequences give repeated
// values. known holds the environment names of the accepted options; any
// other key is an error that names it.
func ParseYAML(b []byte, known map[string]bool) (map[string][]string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	if doc.Kind == 0 { // empty file
		return out, nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("must be a mapping of option names to values")
	}
	if err := flatten(doc.Content[0], "", known, out, 0); err != nil {
		return nil, err
	}
	return out, nil
}

func flatten(m *yaml.Node, prefix string, known map[string]bool, out map[string][]string, depth int) error {
	if depth > 2 {
		return fmt.Errorf("key %s: nested too deep", prefix)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: keys must be plain names", k.Line)
		}
		name := k.Value
		if prefix != "" {
			name = prefix + "-" + k.Value
		}
		if _, dup := out[name]; dup {
			return fmt.Errorf("line %d: key %s given twice", k.Line, name)
		}
		switch v.Kind {
		case yaml.MappingNode:
			if err := flatten(v, name, known, out, depth+1); err != nil {
				return err
			}
			continue
		case yaml.SequenceNode:
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("line %d: key %s: list items must be plain values", item.Line, name)
				}
				out[name] = append(out[name], item.Value)
			}
		case yaml.ScalarNode:
			out[name] = append(out[name], v.Value)
		default:
			return fmt.Errorf("line %d: key %s: unsupported value", v.Line, name)
		}
		if !known[EnvName(name)] || name == "config" {
			return fmt.Errorf("line %d: unknown key %q", k.Line, name)
		}
	}
	return nil
}

func printUsage(out io.Writer, opts []option) {
	fmt.Fprintf(out, `Usage: meshlb node [flags]

Run one meshlb node. Nodes join through a seed, gossip the backend catalog and
build the same consistent-hash ring, so any node routes a key to the same backend.

Every flag can also be set as MESHLB_<NAME> in the environment (--gossip-addr is
MESHLB_GOSSIP_ADDR) or as a key of the --config YAML file; flags win over the
environment, which wins over the file.

Flags:
`)
	for _, o := range opts {
		line := "  --" + o.name
		if o.list {
			line += " (repeatable)"
		}
		fmt.Fprintf(out, "%s\n        %s", line, o.usage)
		if o.def != "" {
			fmt.Fprintf(out, " (default %q)", o.def)
		}
		fmt.Fprintln(out)
	}
	fmt.Fprint(out, `
Example:
  meshlb node --name a --gossip-addr 127.0.0.1:7946 --listen 127.0.0.1:8080 \
    --admin 127.0.0.1:9901 --backend web-1=10.0.0.5:9000
  meshlb node --name b --gossip-addr 127.0.0.1:7947 --listen 127.0.0.1:8081 \
    --admin 127.0.0.1:9902 --join 127.0.0.1:7946
`)
}

// poolValue splits a "NAME=VALUE" option value of a pool; VALUE may hold
// commas and '='.
func poolValue(v string) (pool, value string, err error) {
	pool, value, ok := strings.Cut(v, "=")
	pool, value = strings.TrimSpace(pool), strings.TrimSpace(value)
	if !ok {
		return "", "", fmt.Errorf("%q: want NAME=VALUE, NAME a pool", v)
	}
	if err := gossip.ValidatePool(pool); err != nil {
		return "", "", fmt.Errorf("%q: %w", v, err)
	}
	return pool, value, nil
}
