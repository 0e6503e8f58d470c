package node

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// selfSigned writes an ECDSA P-256 certificate for meshlb.test and
// 127.0.0.1 into dir and returns its pool.
func selfSigned(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshlb.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"meshlb.test"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, "site.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "site.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

func tlsCluster(t *testing.T, size int, gossipKey bool, tweak func(*Config)) ([]*Node, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	pool := selfSigned(t, dir)
	key := make([]byte, 32)
	rand.Read(key)
	nodes := newTestCluster(t, size, func(i int, c *Config) {
		c.TLS = TLSConfig{Addr: "127.0.0.1:0", Dir: dir}
		if gossipKey {
			c.Gossip.SecretKey = key
		}
		if tweak != nil {
			tweak(c)
		}
	})
	waitFor(t, 10*time.Second, "tls ready everywhere", func() (bool, string) {
		for _, n := range nodes {
			if !n.tls.isReady() {
				return false, n.Name() + " not ready"
			}
		}
		return true, ""
	})
	return nodes, pool
}

// handshake runs a TLS handshake with addr and reports whether it resumed.
func handshake(t *testing.T, addr string, cfg *tls.Config) (bool, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return false, err
	}
	defer c.Close()
	// TLS 1.3 tickets come after the handshake: read a little so the
	// client takes them in. The node answers nothing, so time out.
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Read(make([]byte, 1))
	return c.ConnectionState().DidResume, nil
}

// TestTicketKeysMeshWide: three nodes with a gossip key use the same
// ticket keys, made by one node, and a session from one resumes on the
// others. Shutdown leaves no goroutine (goleak in TestMain).
func TestTicketKeysMeshWide(t *testing.T) {
	nodes, pool := tlsCluster(t, 3, true, nil)
	waitFor(t, 10*time.Second, "same keys everywhere", func() (bool, string) {
		for _, n := range nodes {
			n.tls.mu.Lock()
			keys, shared := n.tls.keys, n.tls.shared
			n.tls.mu.Unlock()
			n0 := nodes[0].tls
			n0.mu.Lock()
			same := shared && len(keys) == len(n0.keys) && len(keys) > 0 && keys[0] == n0.keys[0]
			n0.mu.Unlock()
			if !same {
				return false, n.Name() + " has other keys"
			}
		}
		return true, ""
	})
	for _, e := range nodes[1].Cluster().Entries(kindTicketKey) {
		if e.Origin != "n0" {
			t.Errorf("key %s made by %s; want n0, the one minter", e.Key, e.Origin)
		}
	}
	if got := len(nodes[2].Cluster().Entries(kindTicketKey)); got != 2 {
		t.Errorf("%d keys; want 2 (this period's and the next)", got)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: "meshlb.test", ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	for i, n := range nodes {
		resumed, err := handshake(t, n.TLSAddr(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && !resumed {
			t.Errorf("%s: no resumption of a session from another node", n.Name())
		}
	}
	if s := nodes[1].Status().TLS; s == nil || s.TicketKeys != "mesh" || len(s.Certificates) != 1 || s.Certificates[0].Names[0] != "meshlb.test" {
		t.Errorf("status tls = %+v", s)
	}
}

// TestTicketKeysNeedAGossipKey: without a gossip key the keys are each
// node's own, and the replicator refuses to carry one.
func TestTicketKeysNeedAGossipKey(t *testing.T) {
	nodes, _ := tlsCluster(t, 1, false, nil)
	n := nodes[0]
	if s := n.Status().TLS; s.TicketKeys != "local" {
		t.Errorf("ticket keys %q; want local", s.TicketKeys)
	}
	if _, err := n.Cluster().Put(kindTicketKey, "1800000000", make([]byte, 33)); err == nil {
		t.Error("a ticket key was written without a gossip key")
	}
}

// TestTLSBadInput: a handshake that stalls is cut at the handshake
// timeout; with strict SNI an unknown name fails; both are counted.
func TestTLSBadInput(t *testing.T) {
	nodes, pool := tlsCluster(t, 1, true, func(c *Config) {
		c.HandshakeTimeout = 300 * time.Millisecond
		c.TLS.StrictSNI = true
	})
	n := nodes[0]
	c, err := net.Dial("tcp", n.TLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	c.Close()
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("stalled handshake: read %v after %v; want a close at about 300ms", err, time.Since(start))
	}
	if _, err := handshake(t, n.TLSAddr(), &tls.Config{RootCAs: pool, ServerName: "other.test"}); err == nil {
		t.Fatal("strict sni served an unknown name")
	}
	if _, err := handshake(t, n.TLSAddr(), &tls.Config{RootCAs: pool, ServerName: "meshlb.test"}); err != nil {
		t.Fatalf("strict sni refused its own name: %v", err)
	}
	waitFor(t, 5*time.Second, "failures counted", func() (bool, string) {
		to, sni := count(n, "timeout"), count(n, "unknown_sni")
		return to == 1 && sni == 1, fmt.Sprintf("timeout %v, unknown_sni %v", to, sni)
	})
}

func count(n *Node, reason string) float64 {
	var m dto.Metric
	_ = n.tls.errors.WithLabelValues(reason).Write(&m)
	return m.GetCounter().GetValue()
}

// TestTLSForwardedProto: over the TLS listener, an HTTP request (served
// by net/http) and a WebSocket upgrade (served by the acceptor) both
// reach the backend with X-Forwarded-Proto: https, and the plain
// listener still says http.
func TestTLSForwardedProto(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Any answer but 101 reaches the client as it is.
		io.WriteString(w, "proto="+r.Header.Get("X-Forwarded-Proto"))
	}))
	defer backend.Close()
	nodes, pool := tlsCluster(t, 1, true, func(c *Config) {
		c.Backends = []BackendSpec{{ID: "b1", Addr: backend.Listener.Addr().String()}}
	})
	n := nodes[0]
	waitFor(t, 10*time.Second, "backend on the ring", func() (bool, string) {
		ok, why := n.Ready()
		return ok, why
	})
	cfg := &tls.Config{RootCAs: pool, ServerName: "meshlb.test"}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	for _, tc := range []struct {
		label, url string
		client     *http.Client
		want       string
	}{
		{"https", "https://" + n.TLSAddr() + "/?session_id=a", hc, "proto=https"},
		{"http", "http://" + n.ProxyAddr() + "/?session_id=a", http.DefaultClient, "proto=http"},
	} {
		res, err := tc.client.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != tc.want {
			t.Errorf("%s: %q; want %q", tc.label, b, tc.want)
		}
	}
	c, err := tls.Dial("tcp", n.TLSAddr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /ws?session_id=a HTTP/1.1\r\nHost: meshlb.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if string(b) != "proto=https" {
		t.Errorf("wss upgrade: %d %q; want proto=https", res.StatusCode, b)
	}
}

// TestJoinerResumesAtOnce: a node that joins serves TLS only once it has
// the mesh's keys, so the very first handshake through it resumes a
// session made elsewhere.
func TestJoinerResumesAtOnce(t *testing.T) {
	nodes, pool := tlsCluster(t, 1, true, nil)
	cfg := &tls.Config{RootCAs: pool, ServerName: "meshlb.test", ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	if _, err := handshake(t, nodes[0].TLSAddr(), cfg); err != nil {
		t.Fatal(err)
	}
	jc := testConfig(t, "n9", nodes[0].GossipAddr())
	jc.TLS = nodes[0].cfg.TLS
	jc.Gossip.SecretKey = nodes[0].cfg.Gossip.SecretKey
	joiner := startNode(t, jc)
	// No wait: the connection waits in the backlog until the keys came.
	resumed, err := handshake(t, joiner.TLSAddr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !resumed {
		t.Fatal("the first handshake through a joining node did not resume")
	}
}

// TestTLSProxyProtocol: with the PROXY protocol on, the header is read
// before the TLS handshake, and the backend sees the client it names.
func TestTLSProxyProtocol(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "xff="+r.Header.Get("X-Forwarded-For"))
	}))
	defer backend.Close()
	nodes, pool := tlsCluster(t, 1, true, func(c *Config) {
		c.Backends = []BackendSpec{{ID: "b1", Addr: backend.Listener.Addr().String()}}
		c.ProxyProtocol = true
		c.Router.Key.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	n := nodes[0]
	waitFor(t, 10*time.Second, "backend on the ring", func() (bool, string) { return n.Ready() })
	raw, err := net.Dial("tcp", n.TLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(raw, "PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "meshlb.test"})
	io.WriteString(c, "GET /?session_id=a HTTP/1.1\r\nHost: meshlb.test\r\nConnection: close\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if string(b) != "xff=203.0.113.7" {
		t.Fatalf("through PROXY + TLS: %d %q; want xff=203.0.113.7", res.StatusCode, b)
	}
}
