package router

import (
	"fmt"
	"net"
	"slices"
	"strings"
)

// DefaultPool is the pool of a request no route matches, and of every
// backend that names no pool.
const DefaultPool = "default"

// Route sends the requests it matches to a pool, as an HAProxy use_backend,
// an NGINX location or an Envoy route does. A request matches when its
// host matches Host and its path starts with Path.
type Route struct {
	// Host is "" (any host), an exact name ("rides.example.com") or a
	// wildcard ("*.example.com", any name below example.com but not
	// example.com itself). Compared without case and without the port.
	Host string
	// Path is a prefix of the request path, starting with "/"; "" is "/".
	// A plain string prefix, as NGINX's and Envoy's: "/ws" also matches
	// "/wsx"; write "/ws/" to stop at the segment.
	Path string
	// Pool is the pool the request goes to.
	Pool string
}

// String is the route in the syntax of ParseRoute.
func (r Route) String() string {
	var parts []string
	if r.Host != "" {
		parts = append(parts, "host="+r.Host)
	}
	if r.Path != "" {
		parts = append(parts, "path="+r.Path)
	}
	return strings.Join(append(parts, "pool="+r.Pool), ",")
}

// ParseRoute parses "host=NAME,path=PREFIX,pool=NAME": pool is required,
// host and path are optional, in any order.
func ParseRoute(s string) (Route, error) {
	var r Route
	seen := map[string]bool{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok {
			return Route{}, fmt.Errorf("route %q: %q is not key=value (host, path or pool)", s, part)
		}
		if seen[k] {
			return Route{}, fmt.Errorf("route %q: %s given twice", s, k)
		}
		seen[k] = true
		switch k {
		case "host":
			r.Host = strings.ToLower(v)
		case "path":
			r.Path = v
		case "pool":
			r.Pool = v
		default:
			return Route{}, fmt.Errorf("route %q: unknown key %q; allowed: host, path, pool", s, k)
		}
	}
	if err := r.validate(); err != nil {
		return Route{}, fmt.Errorf("route %q: %w", s, err)
	}
	return r, nil
}

func (r Route) validate() error {
	// The pool name's syntax is the catalog's rule (gossip.ValidatePool),
	// which the node applies; the router only needs one.
	if r.Pool == "" {
		return fmt.Errorf("no pool= (the pool the route sends to)")
	}
	if r.Path != "" && (!strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "?# \t")) {
		return fmt.Errorf("path %q: want a prefix starting with / and without a query", r.Path)
	}
	if h := strings.ToLower(r.Host); h != "" {
		name := strings.TrimPrefix(h, "*.")
		if strings.Contains(name, "*") || !validHostName(name) {
			return fmt.Errorf("host %q: want a name like rides.example.com or *.example.com, without a port", h)
		}
	}
	return nil
}

// validHostName accepts DNS names of letters, digits, '-', '_' and dots.
func validHostName(s string) bool {
	if s == "" || len(s) > 253 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// routeTable picks a request's pool: the first route, most specific
// first, whose host and path both match. Specific means the host first (an
// exact name, then the longest wildcard, then any host), then the longest
// path prefix, as NGINX picks a server and then its longest location;
// unlike NGINX, a request that no path of its host's routes matches falls
// through to the less specific hosts' routes instead of a 404. A request
// no route matches goes to DefaultPool.
type routeTable struct {
	routes []Route                  // most specific first
	keys   map[string]*KeyExtractor // by pool, where its key sources are its own
}

// newRouteTable checks routes and refuses two with the same host and path;
// it builds an extractor of each pool's own key sources, the rest as key.
func newRouteTable(routes []Route, key KeyConfig, poolKeySources map[string]string) (*routeTable, error) {
	keys := make(map[string]*KeyExtractor, len(poolKeySources))
	for pool, src := range poolKeySources {
		kc := key
		kc.Sources = src
		ke, err := NewKeyExtractor(kc)
		if err != nil {
			return nil, fmt.Errorf("key sources of pool %s: %w", pool, err)
		}
		keys[pool] = ke
	}
	seen := map[[2]string]string{}
	for _, r := range routes {
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("route %s: %w", r, err)
		}
		k := [2]string{strings.ToLower(r.Host), r.Path}
		if p, dup := seen[k]; dup {
			return nil, fmt.Errorf("routes %s and %s: the same host and path twice", Route{Host: r.Host, Path: r.Path, Pool: p}, r)
		}
		seen[k] = r.Pool
	}
	return &routeTable{routes: SortedRoutes(routes), keys: keys}, nil
}

// CheckRoutes reports what New or SetRoutes would refuse in routes.
func CheckRoutes(routes []Route) error {
	_, err := newRouteTable(routes, KeyConfig{}, nil)
	return err
}

// SortedRoutes returns routes in the order the router tries them, most
// specific first, hosts in lower case: two lists that route alike sort
// alike (the node's config fingerprint hashes this).
func SortedRoutes(routes []Route) []Route {
	rs := slices.Clone(routes)
	for i := range rs {
		rs[i].Host = strings.ToLower(rs[i].Host)
	}
	slices.SortFunc(rs, func(a, b Route) int {
		if c := hostRank(b.Host) - hostRank(a.Host); c != 0 {
			return c
		}
		if c := len(b.Path) - len(a.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Host+"\x00"+a.Path, b.Host+"\x00"+b.Path)
	})
	return rs
}

// hostRank orders hosts by specificity: an exact name above every wildcard,
// a longer wildcard above a shorter one, any host last.
func hostRank(h string) int {
	switch {
	case h == "":
		return 0
	case strings.HasPrefix(h, "*."):
		return 1 + len(h)
	default:
		return 1 << 16
	}
}

// pool returns the pool of a request for host (the Host header, with or
// without a port) and path. It does not allocate for lower-case hosts.
func (t *routeTable) pool(host, path string) string {
	if t == nil || len(t.routes) == 0 {
		return DefaultPool
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	if hasUpper(host) {
		host = strings.ToLower(host)
	}
	if path == "" {
		path = "/"
	}
	for _, r := range t.routes {
		if hostMatches(r.Host, host) && strings.HasPrefix(path, r.Path) {
			return r.Pool
		}
	}
	return DefaultPool
}

func hostMatches(pattern, host string) bool {
	switch {
	case pattern == "":
		return true
	case strings.HasPrefix(pattern, "*."):
		return len(host) > len(pattern)-1 && strings.HasSuffix(host, pattern[1:])
	default:
		return host == pattern
	}
}

func hasUpper(s string) bool {
	for _, c := range []byte(s) {
		if c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}
