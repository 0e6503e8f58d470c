package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDialGuardAllow(t *testing.T) {
	g := newDialGuard([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("192.0.2.0/24")})
	g.interfaceAddrs = func() ([]net.Addr, error) {
		return []net.Addr{
			&net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(16, 32)},
			&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
		}, nil
	}
	g.setListeners("127.0.0.1:9901", "0.0.0.0:8080", "[::]:7946", ":7000", "10.1.2.3:9000", "garbage")
	for _, tt := range []struct {
		addr string
		want error
	}{
		{"127.0.0.1:9901", errOwnListener}, // the admin port
		{"127.0.0.2:9901", nil},            // bound to 127.0.0.1 only: 127.0.0.2 does not reach it
		{"[::ffff:127.0.0.1]:9901", errOwnListener},
		{"127.0.0.1:8080", errOwnListener}, // 0.0.0.0 binds every local address
		{"127.9.9.9:8080", errOwnListener}, // all of 127/8 is local
		{"10.1.2.3:8080", errOwnListener},  // an interface's address
		{"10.1.2.4:8080", nil},             // a neighbour's
		{"[::1]:7946", errOwnListener},     // [::] binds every address, both families
		{"10.1.2.3:7946", errOwnListener},
		{"10.1.2.3:7000", errOwnListener}, // ":7000"
		{"10.1.2.3:9000", errOwnListener},
		{"10.1.2.3:9001", nil},           // another port on this host
		{"[::1]:9901", nil},              // 127.0.0.1:9901 is not [::1]:9901
		{"192.0.2.1:9901", nil},          // in the networks, not ours
		{"0.0.0.0:8080", errOutsideNets}, // outside the networks first
		{"203.0.113.5:80", errOutsideNets},
	} {
		if got := g.allow(netip.MustParseAddrPort(tt.addr)); !errors.Is(got, tt.want) {
			t.Errorf("allow(%s) = %v; want %v", tt.addr, got, tt.want)
		}
	}
	open := newDialGuard(nil)
	open.setListeners("127.0.0.1:9901")
	if err := open.allow(netip.MustParseAddrPort("[::]:9901")); !errors.Is(err, errOwnListener) {
		t.Errorf("dialling the unspecified address of a bound port: %v; want refused", err)
	}
	if err := open.allow(netip.MustParseAddrPort("203.0.113.5:80")); err != nil {
		t.Errorf("no networks set: %v; want any address allowed", err)
	}
}

func TestDialGuardCheckAddrResolves(t *testing.T) {
	g := newDialGuard(nil)
	g.setListeners("127.0.0.1:9901")
	err := g.checkAddr(context.Background(), "localhost:9901")
	if !errors.Is(err, errOwnListener) || !strings.Contains(err.Error(), "resolves to") {
		t.Errorf("localhost:9901: %v; want refused, naming the address it resolves to", err)
	}
	if err := g.checkAddr(context.Background(), "no-such-host.invalid:9901"); err != nil {
		t.Errorf("a name that does not resolve: %v; want it left to the connect-time check", err)
	}
}

// TestOwnListenersRefusedAsBackends: the admin API answers 400 to a
// backend that is one of the node's listeners or outside its networks;
// one that arrives anyway (as from gossip) stays on the ring, is not
// dialled (502 through the proxy, the admin API untouched), and this
// node's health checks vote it down.
func TestIPv4Shorthand(t *testing.T) {
	for host, want := range map[string]bool{
		"127.1": true, "2130706433": true, "0x7f.1": true, "0177.0.0.1": true, "127.0.0.1": false,
		"backend.example": false, "beef.cafe": false, "10.0.0.1": false, "": false, "::1": false,
	} {
		if got := ipv4Shorthand(host); got != want {
			t.Errorf("ipv4Shorthand(%q) = %v; want %v", host, got, want)
		}
	}
}

// TestPeerListenersRefusedAsBackends: a backend pointed at another node's
// admin API would open it to this node's proxy clients just the same; the
// guard knows the peers' addresses from their meta.
func TestPeerListenersRefusedAsBackends(t *testing.T) {
	nodes := newTestCluster(t, 2, nil)
	waitFor(t, 10*time.Second, "n0 knows n1's addresses", func() (bool, string) {
		err := nodes[0].guard.checkAddr(context.Background(), nodes[1].AdminAddr())
		return err != nil, fmt.Sprintf("%v", err)
	})
	for _, addr := range []string{nodes[1].AdminAddr(), nodes[1].ProxyAddr(), nodes[1].GossipAddr()} {
		code, body := call(t, "POST", adminURL(nodes[0], "/v1/backends"), fmt.Sprintf(`{"id": "x", "addr": %q}`, addr))
		if code != http.StatusBadRequest || !strings.Contains(string(body), "another node") {
			t.Fatalf("add %s = %d %s; want 400 naming another node's listener", addr, code, body)
		}
	}
	if code, body := call(t, "POST", adminURL(nodes[0], "/v1/backends"), `{"id": "x", "addr": "127.1:80"}`); code != http.StatusBadRequest || !strings.Contains(string(body), "shorthand") {
		t.Fatalf("add 127.1:80 = %d %s; want 400", code, body)
	}
}

func TestOwnListenersRefusedAsBackends(t *testing.T) {
	cfg := testConfig(t, "self")
	cfg.BackendNetworks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.HealthCheck.Interval = 50 * time.Millisecond
	n := startNode(t, cfg)
	_, adminPort, _ := net.SplitHostPort(n.AdminAddr())
	_, proxyPort, _ := net.SplitHostPort(n.ProxyAddr())
	for _, tc := range []struct{ label, addr, want string }{
		{"admin port", n.AdminAddr(), "own listeners"},
		{"admin port by name", "localhost:" + adminPort, "own listeners"},
		{"proxy port", n.ProxyAddr(), "own listeners"},
		{"gossip port", n.GossipAddr(), "own listeners"},
		{"outside the networks", "192.0.2.7:80", "outside the backend networks"},
	} {
		t.Run(tc.label, func(t *testing.T) {
			code, body := call(t, "POST", adminURL(n, "/v1/backends"), fmt.Sprintf(`{"id": "x", "addr": %q}`, tc.addr))
			if code != http.StatusBadRequest || !strings.Contains(string(body), tc.want) {
				t.Fatalf("add %s = %d %s; want 400 naming %q", tc.addr, code, body, tc.want)
			}
		})
	}

	// As gossip would bring it: straight into the catalog.
	if _, err := n.Cluster().Upsert("evil", "127.0.0.1:"+adminPort); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "ring", func() (bool, string) { return n.Status().Ring.Backends == 1, "waiting for the backend" })
	res, err := http.Post("http://127.0.0.1:"+proxyPort+"/v1/backends/evil/drain?session_id=a", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("through the proxy: %d %s; want 502", res.StatusCode, body)
	}
	for _, rec := range n.Cluster().Records() {
		if rec.ID == "evil" && rec.State.String() != "active" {
			t.Fatalf("the proxy reached the admin API: evil is %s", rec.State)
		}
	}
	waitFor(t, 5*time.Second, "local vote down", func() (bool, string) {
		v := n.checker.View("evil")
		return v.Checked && !v.Up, fmt.Sprintf("view %+v", v)
	})
}
