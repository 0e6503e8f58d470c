package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "meshlb test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes an ECDSA P-256 leaf for names (and 127.0.0.1) to
// dir/base.crt and dir/base.key, and returns its serial.
func (ca *testCA) issue(t *testing.T, dir, base string, serial int64, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Duration(serial) * time.Hour),
		DNSNames: names, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	writeAtomic(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeAtomic(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

// writeAtomic writes as certificate renewers do: a new file renamed over
// the old one.
func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// tlsMesh is three nodes sharing a gossip key, each with a TLS listener
// serving the certificate in dir, and one echo backend.
type tlsMesh struct {
	ca     *testCA
	dir    string
	nodes  []startedLine
	procs  []*proc
	admins []string
}

func startTLSMesh(t *testing.T, extra ...string) *tlsMesh {
	t.Helper()
	m := &tlsMesh{ca: newTestCA(t), dir: t.TempDir()}
	m.ca.issue(t, m.dir, "site", 10, "meshlb.test", "*.meshlb.test")
	_, backend := startEcho(t, "web-1")
	gk := make([]byte, 32)
	rand.Read(gk)
	common := append([]string{"--listen-tls", "127.0.0.1:0", "--tls-dir", m.dir, "--tls-reload-interval", "200ms",
		"--gossip-key", base64.StdEncoding.EncodeToString(gk), "--log-level", "debug"}, extra...)
	var seed string
	for i := range 3 {
		args := append([]string{}, common...)
		if i == 0 {
			args = append(args, "--backend", "web-1="+backend)
		} else {
			args = append(args, "--join", seed)
		}
		p, s := startNode(t, fmt.Sprintf("n%d", i), args...)
		if s.TLSAddr == "" {
			t.Fatalf("n%d: no tls_addr in its startup line", i)
		}
		if i == 0 {
			seed = s.GossipAddr
		}
		m.procs, m.nodes, m.admins = append(m.procs, p), append(m.nodes, s), append(m.admins, s.AdminAddr)
	}
	waitFor(t, 30*time.Second, "one mesh, one ring", oneRing(m.admins, 3, 1))
	waitFor(t, 20*time.Second, "every node ready with mesh ticket keys", func() (bool, string) {
		for _, a := range m.admins {
			st := tlsStatusOf(t, a)
			if st.TicketKeys != "mesh" {
				return false, a + ": ticket keys " + st.TicketKeys
			}
		}
		return true, ""
	})
	return m
}

type tlsStatus struct {
	Ready bool `json:"ready"`
	TLS   struct {
		TicketKeys   string `json:"ticket_keys"`
		Certificates []struct {
			Names    []string  `json:"names"`
			Issuer   string    `json:"issuer"`
			NotAfter time.Time `json:"not_after"`
			Source   string    `json:"source"`
		} `json:"certificates"`
	} `json:"tls"`
}

func tlsStatusOf(t *testing.T, admin string) struct {
	TicketKeys string
	NotAfter   time.Time
	Names      []string
} {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/v1/status")
	var out struct {
		TicketKeys string
		NotAfter   time.Time
		Names      []string
	}
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	var s tlsStatus
	if json.NewDecoder(resp.Body).Decode(&s) != nil || len(s.TLS.Certificates) == 0 {
		return out
	}
	out.TicketKeys, out.NotAfter, out.Names = s.TLS.TicketKeys, s.TLS.Certificates[0].NotAfter, s.TLS.Certificates[0].Names
	return out
}

// dialWSS opens wss:// to addr with the session ID, asks whoami, and
// returns the connection, the backend's answer and the TLS state.
func dialWSS(t *testing.T, addr string, cfg *tls.Config, session string) (net.Conn, string, tls.ConnectionState) {
	t.Helper()
	d := ws.Dialer{TLSConfig: cfg, Timeout: 5 * time.Second}
	conn, _, _, err := d.Dial(context.Background(), "wss://"+addr+"/ws?session_id="+session)
	if err != nil {
		t.Fatalf("wss %s: %v", addr, err)
	}
	st := conn.(*tls.Conn).ConnectionState()
	return conn, wssWhoami(t, conn), st
}

func wssWhoami(t *testing.T, conn net.Conn) string {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := wsutil.WriteClientText(conn, []byte("whoami")); err != nil {
		t.Fatalf("write whoami: %v", err)
	}
	b, err := wsutil.ReadServerText(conn)
	if err != nil {
		t.Fatalf("read whoami: %v", err)
	}
	return string(b)
}

// TestTLSResumesAcrossNodes: wss:// through three nodes reaches one
// backend, and a client that reconnects through another node resumes its
// TLS session there (TLS 1.3 and 1.2): the ticket keys are the mesh's.
func TestTLSResumesAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	m := startTLSMesh(t)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		cache := tls.NewLRUClientSessionCache(8)
		// One server name for every node, as behind DNS round robin: the
		// client's session cache is keyed by it.
		cfg := &tls.Config{RootCAs: m.ca.pool, ServerName: "meshlb.test", ClientSessionCache: cache, MinVersion: v, MaxVersion: v, NextProtos: []string{"http/1.1"}}
		for i, n := range m.nodes {
			conn, who, st := dialWSS(t, n.TLSAddr, cfg, "alice")
			conn.Close()
			if who != "web-1" {
				t.Fatalf("node %d answered %q; want web-1", i, who)
			}
			if st.NegotiatedProtocol != "http/1.1" {
				t.Errorf("alpn %q; want http/1.1", st.NegotiatedProtocol)
			}
			if i > 0 && !st.DidResume {
				t.Errorf("tls %x: reconnect through node %d did not resume", v, i)
			}
		}
	}
}

// TestTLSReloadAndBadInput: a certificate renewed on disk is served to
// new connections while an old WebSocket keeps running; a broken file
// keeps the old certificate; plain HTTP to the TLS port gets Go's 400;
// the status lists the certificate; failures are counted by reason.
func TestTLSReloadAndBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	m := startTLSMesh(t)
	n := m.nodes[0]
	cfg := &tls.Config{RootCAs: m.ca.pool, ServerName: "meshlb.test"}
	old, _, st := dialWSS(t, n.TLSAddr, cfg, "bob")
	defer old.Close()
	first := st.PeerCertificates[0].NotAfter

	s := tlsStatusOf(t, m.admins[0])
	if !s.NotAfter.Equal(first.UTC()) || len(s.Names) == 0 || s.Names[0] != "meshlb.test" {
		t.Fatalf("status certificate %v %v; want not_after %v, names from meshlb.test", s.Names, s.NotAfter, first)
	}

	// Renewed: serial 20 lives 20 h, the first 10 h.
	m.ca.issue(t, m.dir, "site", 20, "meshlb.test", "*.meshlb.test")
	waitFor(t, 10*time.Second, "renewed certificate served", func() (bool, string) {
		c, _, st := dialWSS(t, n.TLSAddr, cfg, "bob")
		c.Close()
		return !st.PeerCertificates[0].NotAfter.Equal(first), "still the first certificate"
	})
	if who := wssWhoami(t, old); who != "web-1" {
		t.Fatalf("old websocket answered %q after the reload", who)
	}
	renewed := tlsStatusOf(t, m.admins[0]).NotAfter

	// Broken: garbage in the certificate file.
	writeAtomic(t, filepath.Join(m.dir, "site.crt"), []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"))
	waitFor(t, 10*time.Second, "reload refusal logged", func() (bool, string) {
		return strings.Contains(m.procs[0].output(), "tls certificate reload refused a file"), "no refusal in the log"
	})
	c, _, st := dialWSS(t, n.TLSAddr, cfg, "bob")
	c.Close()
	if !st.PeerCertificates[0].NotAfter.Equal(renewed) {
		t.Fatalf("after a broken file: served not_after %v; want the renewed %v", st.PeerCertificates[0].NotAfter, renewed)
	}
	if !strings.Contains(m.procs[0].output(), "site.crt") {
		t.Error("the refusal does not name the file")
	}

	// Plain HTTP to the TLS port: Go's own 400.
	pc, err := net.Dial("tcp", n.TLSAddr)
	if err != nil {
		t.Fatal(err)
	}
	_ = pc.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(pc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	b, _ := io.ReadAll(pc)
	pc.Close()
	if !bytes.HasPrefix(b, []byte("HTTP/1.0 400 Bad Request")) {
		t.Fatalf("plain http to the tls port: %q; want Go's 400", b)
	}

	// Plain HTTPS through the node: X-Forwarded-Proto is the router's
	// business; here the answer and the protocol are enough.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	resp, err := hc.Get("https://" + n.TLSAddr + "/?session_id=bob")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "web-1") {
		t.Fatalf("https GET: %d %q; want 200 from web-1", resp.StatusCode, body)
	}

	metrics := func() string {
		resp, err := http.Get("http://" + m.admins[0] + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}()
	for _, want := range []string{`meshlb_tls_handshake_errors_total{reason="http_on_tls"} 1`, `meshlb_tls_cert_expiry_seconds{name="meshlb.test"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(m.procs[0].output(), `"level":"info","component":"tls","error"`) {
		t.Error("a handshake failure was logged at info")
	}
}

// TestTLSNodeWSClient: Node's ws client (Debian node-ws), trusting the
// test CA, opens wss:// through the three nodes to one backend, and
// reuses its TLS session through the other two.
func TestTLSNodeWSClient(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node (nodejs) not installed")
	}
	if _, err := os.Stat("/usr/share/nodejs/ws"); err != nil {
		t.Skip("node-ws not installed (apt-get install node-ws)")
	}
	m := startTLSMesh(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, m.ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, n := range m.nodes {
		urls = append(urls, "wss://"+n.TLSAddr+"/ws?session_id=carol")
	}
	script := `
const fs = require('fs'); const WebSocket = require('ws');
const ca = fs.readFileSync(process.argv[1]); const urls = process.argv.slice(2);
let session;
(async () => {
  const out = [];
  for (const url of urls) {
    await new Promise((resolve, reject) => {
      const w = new WebSocket(url, { ca, servername: 'meshlb.test', session });
      // The ticket may come before the upgrade answer: listen from the start.
      w._req.on('socket', (s) => s.on('session', (b) => { session = b; }));
      w.on('open', () => { out.push({reused: w._socket.isSessionReused()}); w.send('whoami'); });
      w.on('message', (m) => { out[out.length-1].who = m.toString(); w.close(); });
      w.on('close', () => setTimeout(resolve, 100)); w.on('error', reject);
    });
  }
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
`
	cmd := exec.Command(nodeBin, append([]string{"-e", script, caFile}, urls...)...)
	cmd.Env = append(os.Environ(), "NODE_PATH=/usr/share/nodejs")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node ws client: %v\n%s", err, out)
	}
	var got []struct {
		Reused bool   `json:"reused"`
		Who    string `json:"who"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &got); err != nil || len(got) != 3 {
		t.Fatalf("node ws client printed %q", out)
	}
	for i, g := range got {
		if g.Who != "web-1" {
			t.Errorf("node %d: answered %q; want web-1", i, g.Who)
		}
		if i > 0 && !g.Reused {
			t.Errorf("node %d: the ws client's session was not reused", i)
		}
	}
}

// TestTLSChromium: headless Chromium, trusting the test certificate by
// its key (--ignore-certificate-errors-spki-list, as a browser can be
// told to without a system CA store), opens wss:// through the three
// nodes to one backend.
func TestTLSChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("chromium not installed")
	}
	m := startTLSMesh(t)
	pemBytes, err := os.ReadFile(filepath.Join(m.dir, "site.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	var urls []string
	for _, n := range m.nodes {
		urls = append(urls, `"wss://`+n.TLSAddr+`/ws?session_id=dave"`)
	}
	// The page reports to this server: headless Chromium keeps running
	// until it is killed, so the test waits for the report instead of a
	// page dump, which could come before the sockets are done.
	report := make(chan string, 1)
	rs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		select {
		case report <- r.URL.Query().Get("r"):
		default:
		}
	}))
	defer rs.Close()
	page := filepath.Join(t.TempDir(), "wss.html")
	html := `<!doctype html><title>wss</title><body><script>
const urls = [` + strings.Join(urls, ",") + `];
(async () => {
  const out = [];
  for (const u of urls) {
    out.push(await new Promise((res) => {
      const w = new WebSocket(u);
      w.onopen = () => w.send('whoami');
      w.onmessage = (e) => { res(e.data); w.close(); };
      w.onerror = () => res('error');
    }));
  }
  fetch('` + rs.URL + `/?r=' + encodeURIComponent(out.join(',')));
})();
</script></body>`
	if err := os.WriteFile(page, []byte(html), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(),
		"--ignore-certificate-errors-spki-list="+base64.StdEncoding.EncodeToString(spki[:]),
		"file://"+page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	select {
	case got := <-report:
		if got != "web-1,web-1,web-1" {
			t.Fatalf("chromium: %q; want web-1 through every node", got)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("chromium reported nothing in 60s; its stderr:\n%s", stderr.String())
	}
}

// TestTLSBadFilesExitTwo: a node told to serve a certificate it cannot
// load does not start; the message names the file.
func TestTLSBadFilesExitTwo(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	crt, key := ca.issue(t, dir, "good", 10, "meshlb.test")
	_, otherKey := ca.issue(t, t.TempDir(), "other", 10, "meshlb.test")
	garbage := filepath.Join(dir, "garbage.crt")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	empty := t.TempDir()
	base := []string{"node", "--name", "x", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", garbage, "--tls-key", key}, "garbage.crt"},
		{[]string{"--tls-cert", crt, "--tls-key", otherKey}, "does not match"},
		{[]string{"--tls-cert", crt}, "pairs"},
		{[]string{"--tls-dir", empty}, empty},
		{nil, "no certificate"},
	} {
		_, errOut, code := cli(t, append(base, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming %q", tc.args, code, errOut, tc.want)
		}
	}
}
