package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/miekg/dns"
)

const acmeDomain = "ws.meshlb.test"

// acmeMesh is pebble (a real ACME server, validating for real), a DNS
// server pebble asks, and three nodes on 127.0.0.11–13 that share the
// HTTP and TLS ports pebble validates on.
type acmeMesh struct {
	t                     *testing.T
	dir                   string
	challenge             string
	httpPort, tlsPort     int
	gossipPort, adminPort int
	acmeURL, rootsURL     string
	caFile, gossipKey     string
	backend               string
	procs                 [3]*proc
	live                  [3]atomic.Bool
	// dnsHook, when set, runs on every query pebble makes for the domain
	// (its validation is then under way).
	dnsHook atomic.Pointer[func()]
	queries atomic.Int64
}

func acmeIP(i int) string   { return fmt.Sprintf("127.0.0.%d", 11+i) }
func acmeName(i int) string { return fmt.Sprintf("n%d", i) }

// freePort finds a TCP port free on all three node addresses.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", acmeIP(0)+":0")
		if err != nil {
			t.Skipf("cannot bind 127.0.0.11 (no 127/8 on lo?): %v", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := true
		for i := 1; i < 3; i++ {
			if l2, err := net.Listen("tcp", fmt.Sprintf("%s:%d", acmeIP(i), p)); err != nil {
				ok = false
			} else {
				l2.Close()
			}
		}
		if u, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", acmeIP(0), p)); err == nil {
			u.Close()
		} else {
			ok = false
		}
		if ok {
			return p
		}
	}
	t.Fatal("no free port on 127.0.0.11-13")
	return 0
}

// loopbackPort finds a TCP port free on 127.0.0.1.
func loopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startACMEMesh(t *testing.T, challenge string, validity time.Duration) *acmeMesh {
	t.Helper()
	pebble, err := exec.LookPath("pebble")
	if err != nil {
		t.Skip("pebble not installed (apt-get install pebble): the ACME tests need a real ACME server")
	}
	m := &acmeMesh{t: t, dir: t.TempDir(), challenge: challenge}
	m.httpPort, m.tlsPort, m.gossipPort, m.adminPort = freePort(t), freePort(t), freePort(t), freePort(t)
	// pebble's own HTTPS certificate, and the DNS server it asks.
	ca := newTestCA(t)
	pc, pk := ca.issue(t, m.dir, "pebble", 10, "localhost")
	m.caFile = filepath.Join(m.dir, "ca.pem")
	writeAtomic(t, m.caFile, ca.pem)
	dnsAddr := m.startDNS(t)
	// pebble's ports are on 127.0.0.1, where every other test takes its
	// ephemeral ports: one may take a port between our probe and pebble's
	// bind (seen in CI), so a bind failure starts pebble again on others.
	for attempt := 1; ; attempt++ {
		listen, mgmt := fmt.Sprintf("127.0.0.1:%d", loopbackPort(t)), fmt.Sprintf("127.0.0.1:%d", loopbackPort(t))
		cfg, _ := json.Marshal(map[string]any{"pebble": map[string]any{
			"listenAddress": listen, "managementListenAddress": mgmt,
			"certificate": pc, "privateKey": pk,
			"httpPort": m.httpPort, "tlsPort": m.tlsPort,
			"ocspResponderURL": "", "externalAccountBindingRequired": false,
			"certificateValidityPeriod": int(validity.Seconds()),
		}})
		cfgFile := filepath.Join(m.dir, "pebble.json")
		writeAtomic(t, cfgFile, cfg)
		// Validation for real, at full speed, and a new one on every order
		// (runCmd sets the environment, hence env(1)).
		p := runCmd(t, "pebble", exec.Command("env", "PEBBLE_VA_ALWAYS_VALID=0", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_AUTHZREUSE=0", "PEBBLE_WFE_NONCEREJECT=0",
			pebble, "-config", cfgFile, "-dnsserver", dnsAddr))
		m.acmeURL, m.rootsURL = "https://"+listen+"/dir", "https://"+mgmt+"/roots/0"
		up, deadline := false, time.Now().Add(20*time.Second)
		for !up && time.Now().Before(deadline) {
			if _, err := m.pebbleGet(m.acmeURL); err == nil {
				up = true
				break
			}
			select {
			case <-p.exited:
				deadline = time.Time{}
			case <-time.After(100 * time.Millisecond):
			}
		}
		if up {
			break
		}
		if attempt == 3 || !strings.Contains(p.output(), "address already in use") {
			t.Fatalf("pebble did not come up (attempt %d):\n%s", attempt, p.output())
		}
		t.Logf("pebble: a port was taken under it; again on others")
	}
	_, m.backend = startEcho(t, "web-1")
	gk := make([]byte, 32)
	rand.Read(gk)
	m.gossipKey = base64.StdEncoding.EncodeToString(gk)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { m.start(i) })
	}
	wg.Wait()
	return m
}

func (m *acmeMesh) pebbleGet(url string) ([]byte, error) {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(m.caFile)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(b)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// roots is the pool of pebble's issuing root (made at its start).
func (m *acmeMesh) roots() *x509.CertPool {
	b, err := m.pebbleGet(m.rootsURL)
	if err != nil {
		m.t.Fatalf("pebble roots: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		m.t.Fatalf("pebble roots: no PEM in %q", b)
	}
	return pool
}

func (m *acmeMesh) args(i int, seeds ...string) []string {
	a := []string{"node", "--name", acmeName(i), "--log-format", "json",
		"--gossip-addr", fmt.Sprintf("%s:%d", acmeIP(i), m.gossipPort),
		"--listen", fmt.Sprintf("%s:%d", acmeIP(i), m.httpPort),
		"--listen-tls", fmt.Sprintf("%s:%d", acmeIP(i), m.tlsPort),
		"--admin", fmt.Sprintf("%s:%d", acmeIP(i), m.adminPort),
		"--gossip-key", m.gossipKey, "--backend", "web-1=" + m.backend,
		"--acme-domain", acmeDomain, "--acme-ca", m.acmeURL, "--acme-ca-root", m.caFile,
		"--acme-challenge", m.challenge, "--data-dir", filepath.Join(m.dir, acmeName(i))}
	if seeds == nil {
		for j := range 3 {
			if j != i {
				seeds = append(seeds, fmt.Sprintf("%s:%d", acmeIP(j), m.gossipPort))
			}
		}
	}
	for _, s := range seeds {
		a = append(a, "--join", s)
	}
	return a
}

func (m *acmeMesh) start(i int, seeds ...string) { m.startArgs(i, m.args(i, seeds...)) }

func (m *acmeMesh) startArgs(i int, args []string) {
	m.t.Helper()
	p := run(m.t, acmeName(i), args...)
	select {
	case <-p.started:
	case <-p.exited:
		m.t.Errorf("%s exited at start: %v\n%s", acmeName(i), p.err, p.output())
	case <-time.After(20 * time.Second):
		m.t.Errorf("%s did not start\n%s", acmeName(i), p.output())
	}
	m.procs[i] = p
	m.live[i].Store(true)
}

func (m *acmeMesh) kill(i int) {
	m.live[i].Store(false)
	m.procs[i].cmd.Process.Signal(syscall.SIGKILL)
	<-m.procs[i].exited
}

func (m *acmeMesh) admin(i int) string { return fmt.Sprintf("%s:%d", acmeIP(i), m.adminPort) }

type acmeDomainStatus struct {
	Domain     string    `json:"domain"`
	State      string    `json:"state"`
	ValidUntil time.Time `json:"valid_until"`
	Serial     string    `json:"serial"`
	Orderer    string    `json:"orderer"`
	LastBy     string    `json:"last_by"`
	LastError  string    `json:"last_error"`
}

func (m *acmeMesh) status(i int) (acmeDomainStatus, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + m.admin(i) + "/v1/status")
	if err != nil {
		return acmeDomainStatus{}, err
	}
	defer resp.Body.Close()
	var s struct {
		TLS struct {
			ACME []acmeDomainStatus `json:"acme"`
		} `json:"tls"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return acmeDomainStatus{}, err
	}
	if len(s.TLS.ACME) != 1 {
		return acmeDomainStatus{}, fmt.Errorf("%d acme domains in status", len(s.TLS.ACME))
	}
	return s.TLS.ACME[0], nil
}

// ordering is the live node that says it is ordering (its own view is
// current the moment it starts), or -1.
func (m *acmeMesh) ordering() int {
	for i := range 3 {
		if !m.live[i].Load() {
			continue
		}
		s, err := m.status(i)
		if err == nil && (s.State == "ordering" || s.State == "renewing") && s.LastBy == acmeName(i) {
			return i
		}
	}
	return -1
}

// startDNS answers pebble's queries for the domain with the live nodes
// that are not ordering it, so that every validation reaches a node
// that did not order.
func (m *acmeMesh) startDNS(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		a := new(dns.Msg)
		a.SetReply(r)
		a.Authoritative = true
		if len(r.Question) == 1 && strings.EqualFold(r.Question[0].Name, acmeDomain+".") {
			q := r.Question[0]
			if q.Qtype == dns.TypeA {
				m.queries.Add(1)
				if h := m.dnsHook.Load(); h != nil {
					(*h)()
				}
				o := m.ordering()
				for i := range 3 {
					if i != o && m.live[i].Load() {
						a.Answer = append(a.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: net.ParseIP(acmeIP(i))})
					}
				}
			}
		} else {
			a.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(a)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// metric reads one counter of node i's /metrics.
func (m *acmeMesh) metric(i int, series string) float64 {
	resp, err := http.Get("http://" + m.admin(i) + "/metrics")
	if err != nil {
		m.t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// serving waits until every node in is reports serial (or, serial "",
// the same valid one) and returns it.
func (m *acmeMesh) serving(timeout time.Duration, is []int, not string) string {
	m.t.Helper()
	var serial string
	waitFor(m.t, timeout, "every node serves one new acme certificate", func() (bool, string) {
		serial = ""
		for _, i := range is {
			s, err := m.status(i)
			switch {
			case err != nil:
				return false, err.Error()
			case s.Serial == "" || s.Serial == not:
				return false, fmt.Sprintf("%s: %+v", acmeName(i), s)
			case serial != "" && s.Serial != serial:
				return false, fmt.Sprintf("%s serves %s, another %s", acmeName(i), s.Serial, serial)
			}
			serial = s.Serial
		}
		return true, ""
	})
	return serial
}

// wssCert dials wss:// to node i as a client of the domain would,
// verifying against pebble's root, and returns the served serial and the
// backend's answer.
func (m *acmeMesh) wssCert(i int, roots *x509.CertPool) (string, string, error) {
	d := ws.Dialer{TLSConfig: &tls.Config{RootCAs: roots, ServerName: acmeDomain}, Timeout: 5 * time.Second,
		NetDial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("%s:%d", acmeIP(i), m.tlsPort))
		}}
	conn, _, _, err := d.Dial(context.Background(), "wss://"+acmeDomain+"/ws?session_id=acme")
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	st := conn.(*tls.Conn).ConnectionState()
	return st.PeerCertificates[0].SerialNumber.Text(16), wssWhoami(m.t, conn), nil
}

func testACME(t *testing.T, challenge string, validity time.Duration, more func(m *acmeMesh, serial string)) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Parallel()
	began := time.Now()
	m := startACMEMesh(t, challenge, validity)
	serial := m.serving(60*time.Second, []int{0, 1, 2}, "")
	t.Logf("%s: one certificate from start to every node serving it in %v", challenge, time.Since(began).Round(10*time.Millisecond))
	for i := range 3 {
		for _, l := range strings.Split(m.procs[i].output(), "\n") {
			if strings.Contains(l, "acme order failed") {
				t.Logf("%s: %s", acmeName(i), l)
			}
		}
	}
	s, _ := m.status(0)
	orderer := -1
	for i := range 3 {
		if acmeName(i) == s.LastBy {
			orderer = i
		}
	}
	if orderer < 0 || s.State != "valid" {
		t.Fatalf("status %+v: want state valid and the ordering node in last_by", s)
	}
	// The validation reached the others only (the DNS answers them), and
	// they answered it from what gossip brought them.
	series := `meshlb_acme_challenges_answered_total{type="` + challenge + `"}`
	var others float64
	for i := range 3 {
		n := m.metric(i, series)
		t.Logf("%s answered %v validation requests (ordered: %v)", acmeName(i), n, i == orderer)
		if i == orderer && n != 0 {
			t.Errorf("the ordering node %s answered %v validations; the DNS sent none to it", acmeName(i), n)
		}
		if i != orderer {
			others += n
		}
	}
	if others < 1 || m.queries.Load() < 1 {
		t.Fatalf("no validation reached a node that did not order (%v answers, %d DNS queries)", others, m.queries.Load())
	}
	out, stderr, code := cli(t, "status", "--admin-url", "http://"+m.admin(2))
	if code != 0 || !strings.Contains(out, "acme "+acmeDomain+": valid, valid until ") || !strings.Contains(out, "ordered by "+acmeName(orderer)) {
		t.Errorf("meshlb status (%d): %s%s", code, out, stderr)
	}
	roots := m.roots()
	for i := range 3 {
		got, who, err := m.wssCert(i, roots)
		if err != nil {
			t.Fatalf("wss:// to %s: %v", acmeName(i), err)
		}
		if got != serial || who != "web-1" {
			t.Errorf("%s: serial %s and backend %q; want %s and web-1", acmeName(i), got, who, serial)
		}
		if left := m.metric(i, `meshlb_tls_cert_expiry_seconds{name="`+acmeDomain+`"}`); left <= 0 {
			t.Errorf("%s: meshlb_tls_cert_expiry_seconds %v for the managed certificate", acmeName(i), left)
		}
	}
	if more != nil {
		more(m, serial)
	}
}

// TestACMEHTTP01: a 3-node mesh gets a certificate from pebble through
// HTTP-01 answered by nodes that did not order it; every node serves it
// to a Go and a Node.js wss:// client; the orderer killed mid-renewal,
// the next one renews; a restarted node serves from disk before it syncs.
func TestACMEHTTP01(t *testing.T) {
	testACME(t, "http-01", 45*time.Second, func(m *acmeMesh, serial string) {
		m.nodeWS(serial)
		// Renewal is due at two thirds of 45 s. The first DNS query of the
		// renewal means pebble is validating: the orderer dies there.
		killed := make(chan int, 1)
		var once sync.Once
		hook := func() {
			once.Do(func() {
				o := m.ordering()
				if o >= 0 {
					m.kill(o)
				}
				killed <- o
			})
		}
		m.dnsHook.Store(&hook)
		var first int
		select {
		case first = <-killed:
		case <-time.After(60 * time.Second):
			m.t.Fatal("no renewal began")
		}
		if first < 0 {
			m.t.Fatal("a renewal's validation began with no node ordering")
		}
		rest := []int{}
		for i := range 3 {
			if i != first {
				rest = append(rest, i)
			}
		}
		renewed := m.serving(60*time.Second, rest, serial)
		s, _ := m.status(rest[0])
		if s.LastBy == acmeName(first) || s.State != "valid" {
			m.t.Fatalf("after the orderer %s died: %+v; want another node's valid certificate", acmeName(first), s)
		}
		m.t.Logf("%s killed mid-renewal; %s renewed (serial %s -> %s)", acmeName(first), s.LastBy, serial, renewed)
		// A restarted node, its seed dead and on a gossip port no member
		// knows, never syncs; it serves the certificate it kept on disk.
		r := rest[1]
		m.kill(r)
		m.startArgs(r, append(m.args(r, fmt.Sprintf("%s:%d", acmeIP(first), m.gossipPort)), "--gossip-addr", acmeIP(r)+":0"))
		roots := m.roots()
		var got string
		waitFor(m.t, 20*time.Second, "the restarted node serves from disk", func() (bool, string) {
			g, _, err := m.wssCert(r, roots)
			got = g
			return err == nil, fmt.Sprint(err)
		})
		if got != renewed {
			m.t.Fatalf("restarted %s serves %s; want %s from disk", acmeName(r), got, renewed)
		}
		if !strings.Contains(m.procs[r].output(), `"acme certificate loaded from disk"`) || strings.Contains(m.procs[r].output(), `"source":"mesh"`) {
			m.t.Fatalf("restarted node did not serve from disk alone:\n%s", m.procs[r].output())
		}
	})
}

// TestACMETLSALPN01: the same issuance through TLS-ALPN-01 on the TLS
// listener, each node making the validation certificate from the
// replicated key authorization.
func TestACMETLSALPN01(t *testing.T) {
	testACME(t, "tls-alpn-01", time.Hour, nil)
}

// nodeWS connects Node's ws client to each node over wss:// and checks
// it sees the serial.
func (m *acmeMesh) nodeWS(serial string) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		m.t.Log("node (nodejs) not installed: Node's ws client not run")
		return
	}
	if _, err := os.Stat("/usr/share/nodejs/ws"); err != nil {
		m.t.Log("node-ws not installed: Node's ws client not run")
		return
	}
	rootsPEM, err := m.pebbleGet(m.rootsURL)
	if err != nil {
		m.t.Fatal(err)
	}
	rootFile := filepath.Join(m.dir, "pebble-root.pem")
	writeAtomic(m.t, rootFile, rootsPEM)
	var hosts []string
	for i := range 3 {
		hosts = append(hosts, fmt.Sprintf("%s:%d", acmeIP(i), m.tlsPort))
	}
	script := `
const fs = require('fs'); const WebSocket = require('ws');
const ca = fs.readFileSync(process.argv[1]); const hosts = process.argv.slice(2);
(async () => {
  const out = [];
  for (const h of hosts) {
    const [host, port] = h.split(':');
    await new Promise((resolve, reject) => {
      const w = new WebSocket('wss://` + acmeDomain + `:' + port + '/ws?session_id=acme', { ca, lookup: (n, o, cb) => o && o.all ? cb(null, [{address: host, family: 4}]) : cb(null, host, 4) });
      w.on('open', () => { out.push({serial: w._socket.getPeerCertificate().serialNumber}); w.send('whoami'); });
      w.on('message', (m) => { out[out.length-1].who = m.toString(); w.close(); });
      w.on('close', resolve); w.on('error', reject);
    });
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`
	cmd := exec.Command(nodeBin, append([]string{"-e", script, rootFile}, hosts...)...)
	cmd.Env = append(os.Environ(), "NODE_PATH=/usr/share/nodejs")
	out, err := cmd.CombinedOutput()
	if err != nil {
		m.t.Fatalf("node ws client: %v\n%s", err, out)
	}
	var got []struct{ Serial, Who string }
	if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil || len(got) != 3 {
		m.t.Fatalf("node ws client printed %q", out)
	}
	for i, g := range got {
		if !strings.EqualFold(strings.TrimLeft(g.Serial, "0"), strings.TrimLeft(serial, "0")) || g.Who != "web-1" {
			m.t.Errorf("node ws via %s: serial %s, backend %q; want %s, web-1", acmeName(i), g.Serial, g.Who, serial)
		}
	}
}

// TestACMEBadInputExitTwo: what ACME needs is refused at start with an
// error naming it, not found out at the first order.
func TestACMEBadInputExitTwo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	gk := "--gossip-key=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	base := []string{"node", "--name", "x", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0",
		"--listen-tls", "127.0.0.1:0", "--acme-domain", acmeDomain, "--data-dir", filepath.Join(dir, "data")}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{gk, "--acme-ca-root", filepath.Join(dir, "missing.pem")}, "missing.pem"},
		{[]string{gk, "--acme-ca-root", garbage}, "no PEM certificate"},
		{nil, "--gossip-key"},
		{[]string{gk, "--acme-domain", "Bad_Name"}, "Bad_Name"},
	} {
		_, errOut, code := cli(t, append(base, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming %q", tc.args, code, errOut, tc.want)
		}
	}
}
