package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A backend is any host:port the admin API or gossip hands us, and the
// router connects to it from inside the node. Pointed at the node's own
// admin port, it would let any client of the proxy drive the admin API
// (drain the mesh); pointed at the proxy port, it loops. dialGuard
// refuses both, and anything outside Config.BackendNetworks. The ring is
// left alone: every node must build the same one, and what is "self"
// differs from node to node, so each node refuses to dial, and its
// health checks fail, instead of dropping the backend.

var (
	errOwnListener  = errors.New("address is one of this node's own listeners")
	errOutsideNets  = errors.New("address is outside the backend networks")
	errPeerListener = errors.New("address is another node's proxy, admin or gossip listener")
	// errIPv4Shorthand refuses "127.1", "0x7f.1" or "2130706433": C's
	// inet_aton reads them as IPv4 addresses, Go's parser does not, so the
	// guard and a resolver could disagree about where they lead.
	errIPv4Shorthand = errors.New("an IPv4 address in shorthand, octal or hex form; write it as a.b.c.d")
)

// localAddrsTTL bounds how stale the cached list of local addresses may
// be: an address added to an interface is known within it. Reading the
// list costs a netlink dump, too much for every connect.
const localAddrsTTL = 5 * time.Second

// dialGuard decides whether the node may connect to an address as a
// backend. Its methods are safe for concurrent use; allow is cheap.
type dialGuard struct {
	networks []netip.Prefix
	// listeners are the node's bound addresses (proxy, admin, gossip);
	// an unspecified IP stands for every local address. Set at Start.
	listeners atomic.Pointer[[]netip.AddrPort]
	// peers are the other nodes' advertised proxy, admin and gossip
	// addresses, from their meta: a backend pointed at a peer's admin API
	// would open it to the proxy's clients just the same. Updated on every
	// membership change.
	peers atomic.Pointer[[]netip.AddrPort]
	// interfaceAddrs lists the local addresses; tests replace it.
	interfaceAddrs func() ([]net.Addr, error)

	mu      sync.Mutex // serialises refreshes of local
	local   atomic.Pointer[localAddrs]
	nowFunc func() time.Time
}

type localAddrs struct {
	at    time.Time
	addrs map[netip.Addr]struct{}
}

func newDialGuard(networks []netip.Prefix) *dialGuard {
	g := &dialGuard{networks: slices.Clone(networks), interfaceAddrs: net.InterfaceAddrs, nowFunc: time.Now}
	g.listeners.Store(&[]netip.AddrPort{})
	g.peers.Store(&[]netip.AddrPort{})
	return g
}

// parseListeners turns "host:port" strings into addresses; an empty host
// is the unspecified address, and what does not parse is skipped.
func parseListeners(addrs []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if host == "" {
			host = "::" // ":8080" binds every address
		}
		ap, err := netip.ParseAddrPort(net.JoinHostPort(host, port))
		if err != nil || ap.Port() == 0 {
			continue
		}
		out = append(out, netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()))
	}
	return out
}

// setPeers records the other nodes' advertised addresses.
func (g *dialGuard) setPeers(addrs ...string) {
	out := parseListeners(addrs)
	g.peers.Store(&out)
}

// setListeners records the node's bound listeners. Each is "host:port";
// one that does not parse is skipped.
func (g *dialGuard) setListeners(addrs ...string) {
	out := parseListeners(addrs)
	g.listeners.Store(&out)
}

// allow reports why the node must not connect to ap as a backend, or nil.
func (g *dialGuard) allow(ap netip.AddrPort) error {
	ip := ap.Addr().Unmap().WithZone("")
	if len(g.networks) > 0 && !slices.ContainsFunc(g.networks, func(p netip.Prefix) bool { return p.Contains(ip) }) {
		return errOutsideNets
	}
	for _, l := range *g.listeners.Load() {
		if l.Port() != ap.Port() {
			continue
		}
		switch lip := l.Addr(); {
		case lip == ip,
			ip.IsUnspecified(), // connecting to 0.0.0.0 or :: reaches this host
			lip.IsUnspecified() && g.isLocal(ip):
			return errOwnListener
		}
	}
	for _, p := range *g.peers.Load() {
		if p.Port() != ap.Port() {
			continue
		}
		// A peer on this host may listen on every local address: any
		// local IP with its port may reach it.
		if pip := p.Addr(); pip == ip || (g.isLocal(pip) && g.isLocal(ip)) {
			return errPeerListener
		}
	}
	return nil
}

// isLocal reports whether ip is an address of this host: loopback (all of
// 127.0.0.0/8 and ::1 reach a listener bound to every address) or one of
// its interfaces'.
func (g *dialGuard) isLocal(ip netip.Addr) bool {
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	_, ok := g.localAddrs().addrs[ip]
	return ok
}

func (g *dialGuard) localAddrs() *localAddrs {
	now := g.nowFunc()
	if l := g.local.Load(); l != nil && now.Sub(l.at) < localAddrsTTL {
		return l
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if l := g.local.Load(); l != nil && now.Sub(l.at) < localAddrsTTL {
		return l
	}
	l := &localAddrs{at: now, addrs: map[netip.Addr]struct{}{}}
	addrs, err := g.interfaceAddrs()
	if err != nil {
		if old := g.local.Load(); old != nil {
			l.addrs = old.addrs // keep what we knew; retry after the TTL
		}
	}
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
		if na, ok := netip.AddrFromSlice(ip); ok {
			l.addrs[na.Unmap()] = struct{}{}
		}
	}
	g.local.Store(l)
	return l
}

// checkAddr is the admin API's check of a backend address "host:port":
// an IP is judged as a connect to it would be; a name is resolved (within
// a few seconds) and refused if any of its addresses is. A name that does
// not resolve is let through: the connect-time check judges it later.
func (g *dialGuard) checkAddr(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return g.allowed(ap, addr)
	}
	if ipv4Shorthand(host) {
		return fmt.Errorf("host %q: %w", host, errIPv4Shorthand)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil {
		return nil
	}
	for _, ip := range ips {
		if err := g.allowed(netip.AddrPortFrom(ip, uint16(p)), addr); err != nil {
			return err
		}
	}
	return nil
}

func (g *dialGuard) allowed(ap netip.AddrPort, addr string) error {
	if err := g.allow(ap); err != nil {
		if ap.String() == addr {
			return err
		}
		return fmt.Errorf("%s resolves to %s: %w", addr, ap, err)
	}
	return nil
}

// healthDial is the health checks' dialer: a check of an address the
// guard refuses fails (this node votes the backend down), so a backend
// that is every node's own admin port, say 127.0.0.1:9901, leaves the
// ring by the mesh's quorum, on every node alike.
func (g *dialGuard) healthDial() func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return nil
		}
		return g.allow(ap)
	}}
	return d.DialContext
}

// gossipListeners are the gossip addresses to guard: the bound one (its
// port from the advertised address when bound to port 0) and the
// advertised one.
func gossipListeners(bind, advertised string) []string {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return []string{advertised}
	}
	if port == "0" {
		if _, p, err := net.SplitHostPort(advertised); err == nil {
			port = p
		}
	}
	return []string{net.JoinHostPort(host, port), advertised}
}

// ipv4Shorthand reports whether host is made only of digits, dots and hex
// or octal prefixes without being a dotted quad netip accepts: a form some
// resolvers read as an IPv4 address.
func ipv4Shorthand(host string) bool {
	if host == "" {
		return false
	}
	for _, c := range strings.ToLower(host) {
		if !(c >= '0' && c <= '9' || c == '.' || c == 'x' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	first := host[0]
	if !(first >= '0' && first <= '9') {
		return false // a name such as "beef.cafe"
	}
	_, err := netip.ParseAddr(host)
	return err != nil
}
