package node

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshlb/meshlb/meshdns"
)

// dnsAnswer asks n's DNS server for the zone's A records over UDP.
func dnsAnswer(t testing.TB, n *Node) ([]string, error) {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("ws.test.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(q, n.dns.Addr())
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, rr := range r.Answer {
		ips = append(ips, rr.(*dns.A).A.String())
	}
	slices.Sort(ips)
	return ips, nil
}

// Every node answers the same set, from gossip: each node advertises its
// own loopback address; a node that leaves is out of every answer.
func TestDNSAnswersTheMesh(t *testing.T) {
	nodes := newTestCluster(t, 3, func(i int, c *Config) {
		c.Backends = []BackendSpec{{ID: "web-1", Addr: "127.0.0.1:9"}}
		c.AdvertiseProxy = fmt.Sprintf("127.0.0.%d:8080", i+1)
		c.DNS = meshdns.Config{Addr: "127.0.0.1:0", Names: []string{"ws.test"}}
	})
	all := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	answers := func(ns []*Node, want []string) func() (bool, string) {
		return func() (bool, string) {
			for _, n := range ns {
				got, err := dnsAnswer(t, n)
				if err != nil || !slices.Equal(got, want) {
					return false, fmt.Sprintf("%s answers %v, %v; want %v", n.Name(), got, err, want)
				}
				if st := n.Status(); st.DNS == nil || st.DNS.Stale || strings.Join(st.DNS.Answer, ",") != strings.Join(want, ",") {
					return false, fmt.Sprintf("%s status %+v", n.Name(), st.DNS)
				}
			}
			return true, ""
		}
	}
	waitFor(t, 10*time.Second, "every node answers every node", answers(nodes, all))
	for _, m := range nodes[0].Status().Members {
		if !m.Ready {
			t.Errorf("member %s not ready in meta", m.Name)
		}
	}
	stopNode(nodes[2])
	waitFor(t, 10*time.Second, "the stopped node out of every answer", answers(nodes[:2], all[:2]))
}
