package node

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/meshdns"
)

// readyPoll is how often meshLoop looks at this node's readiness, which
// changes without a gossip signal when a ring is swapped in. It bounds
// how late peers learn that a new node is ready: this plus gossip's
// dissemination, well under the second a joining node may take to enter
// DNS answers.
const readyPoll = 50 * time.Millisecond

// meshLoop publishes this node's readiness in its meta the moment it
// changes (peers' DNS answers include only ready nodes), and feeds the
// DNS server, if any, the mesh on every membership or meta change.
func (n *Node) meshLoop(ctx context.Context) {
	tick := time.NewTicker(readyPoll)
	defer tick.Stop()
	published := false
	for {
		ready, _ := n.Ready()
		if ready != published {
			published = ready
			n.publishMetaLogged()
		}
		if n.dns != nil {
			n.dns.Update(n.dnsMembers(ready))
		}
		// Wait for a change: a gossip signal, or this node's readiness.
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return
			case <-n.meshChanges:
				waiting = false
			case <-tick.C:
				r, _ := n.Ready()
				waiting = r == published
			}
		}
	}
}

// dnsMembers is the mesh as DNS answers it, from the gossiped member list
// and meta only (never local probing), so that every node answers alike.
// This node counts with its own readiness, which is ahead of its meta.
func (n *Node) dnsMembers(selfReady bool) []meshdns.Member {
	ms := n.cluster.Members()
	out := make([]meshdns.Member, 0, len(ms)+1)
	out = append(out, meshdns.Member{Name: n.cfg.Name, Addr: hostIP(n.advertisedProxy()), Eligible: selfReady, Self: true})
	for _, m := range ms {
		if m.Name == n.cfg.Name || !live(m) {
			continue
		}
		// A node of the release before says nothing of its readiness:
		// active counts as ready, as a static DNS list would have it.
		ready := m.Meta.Ready || m.Meta.ReadyUnknown
		out = append(out, meshdns.Member{Name: m.Name, Addr: hostIP(m.Meta.ProxyAddr), Eligible: ready && m.Meta.State == gossip.NodeActive})
	}
	return out
}

// advertisedProxy is the address clients reach this node's proxy at:
// AdvertiseProxy, or the bound proxy address, an unspecified host taking
// the gossip advertise host either way.
func (n *Node) advertisedProxy() string {
	if n.cfg.AdvertiseProxy != "" {
		return n.advertised(n.cfg.AdvertiseProxy)
	}
	return n.advertised(n.ProxyAddr())
}

// hostIP is the IP of host:port; invalid for a host name or an
// unspecified address, which DNS can't answer.
func hostIP(hostPort string) netip.Addr {
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return netip.Addr{}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.IsUnspecified() || ip.Zone() != "" {
		return netip.Addr{}
	}
	return ip.Unmap()
}
