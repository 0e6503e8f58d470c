package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/meshacme"
	"github.com/meshlb/meshlb/router"
	"github.com/meshlb/meshlb/tlsconf"
)

// TLSConfig configures the TLS listener. It is off unless Addr is set.
type TLSConfig struct {
	// Addr is the TLS proxy listener, host:port: wss:// and https://,
	// served as the plain listener serves ws:// and http://.
	Addr string
	// CertFiles and KeyFiles are pairs, in order; the first is the
	// default certificate. Dir adds its NAME.crt/NAME.key pairs after
	// them. At least one pair is needed.
	CertFiles, KeyFiles []string
	Dir                 string
	// StrictSNI fails a handshake whose SNI matches no certificate
	// instead of serving the default one.
	StrictSNI bool
	// TicketRotate is how often the mesh makes a new session-ticket key;
	// the two before the current one still decrypt. Default 1h.
	TicketRotate time.Duration
	// ReloadInterval is how often the files are checked for a change
	// (size and modification time; no content is read unless one
	// changed). Default 2 s; SIGHUP reloads at once.
	ReloadInterval time.Duration
}

func (c TLSConfig) withDefaults() TLSConfig {
	if c.TicketRotate <= 0 {
		c.TicketRotate = time.Hour
	}
	if c.ReloadInterval <= 0 {
		c.ReloadInterval = 2 * time.Second
	}
	c.CertFiles = append([]string(nil), c.CertFiles...)
	c.KeyFiles = append([]string(nil), c.KeyFiles...)
	return c
}

func (c TLSConfig) validate() error {
	if c.Addr == "" {
		if len(c.CertFiles)+len(c.KeyFiles) > 0 || c.Dir != "" {
			return errors.New("tls: certificates given but no tls listen address")
		}
		return nil
	}
	if err := validateHostPort(c.Addr); err != nil {
		return fmt.Errorf("tls listen address: %w", err)
	}
	if len(c.CertFiles) != len(c.KeyFiles) {
		return fmt.Errorf("tls: %d certificate files but %d key files: give them in pairs", len(c.CertFiles), len(c.KeyFiles))
	}
	if c.TicketRotate < time.Minute {
		return fmt.Errorf("tls ticket rotation %v: want at least 1m", c.TicketRotate)
	}
	return nil
}

func (c TLSConfig) store() tlsconf.Config {
	tc := tlsconf.Config{Dir: c.Dir, StrictSNI: c.StrictSNI}
	for i := range c.CertFiles {
		tc.Pairs = append(tc.Pairs, tlsconf.Pair{Cert: c.CertFiles[i], Key: c.KeyFiles[i]})
	}
	return tc
}

// tlsServer is the node's TLS listener and what it needs: the
// certificates, one base tls.Config whose session-ticket keys follow the
// mesh's, and the gate that holds accepting until those keys are known.
type tlsServer struct {
	cfg   TLSConfig
	store *tlsconf.Store
	base  *tls.Config
	log   zerolog.Logger

	acme  *acmeManager // nil without --acme-domain (acme.go)
	acc   *acceptor
	ready chan struct{} // closed once ticket keys are known, or the wait gave up
	once  sync.Once

	mu     sync.Mutex // guards keys, shared
	keys   [][tlsconf.TicketKeyLen]byte
	shared bool // the keys in use came from the mesh

	handshakes *prometheus.CounterVec
	errors     *prometheus.CounterVec
}

func newTLSServer(cfg TLSConfig, acme ACMEConfig, log zerolog.Logger, reg prometheus.Registerer) (*tlsServer, error) {
	sc := cfg.store()
	sc.AllowEmpty = len(acme.Domains) > 0
	store, err := tlsconf.New(sc)
	if err != nil {
		return nil, err
	}
	t := &tlsServer{cfg: cfg, store: store, log: log.With().Str("component", "tls").Logger(), ready: make(chan struct{})}
	t.base = &tls.Config{
		GetCertificate: store.GetCertificate,
		MinVersion:     tls.VersionTLS12,
		// WebSockets upgrade over HTTP/1.1; h2 is not offered, so a
		// browser speaks HTTP/1.1 to this port for plain requests too.
		NextProtos: []string{"http/1.1"},
	}
	if len(acme.Domains) > 0 {
		if t.acme, err = newACMEManager(acme, log, reg); err != nil {
			return nil, err
		}
		t.base.GetCertificate = t.getCertificate
		if acme.Challenge == meshacme.TLSALPN01 {
			// Offered last: a client choosing http/1.1 never gets it.
			t.base.NextProtos = append(t.base.NextProtos, meshacme.ALPNProto)
		}
	}
	t.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlb_tls_handshakes_total", Help: "Completed TLS handshakes, by whether the session was resumed.",
	}, []string{"resumed"})
	t.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlb_tls_handshake_errors_total", Help: "Failed TLS handshakes by reason (timeout, http_on_tls, not_tls, eof, client_alert, unknown_sni, handshake).",
	}, []string{"reason"})
	for _, r := range []string{"timeout", "http_on_tls", "not_tls", "eof", "client_alert", "unknown_sni", "handshake"} {
		t.errors.WithLabelValues(r)
	}
	reg.MustRegister(t.handshakes, t.errors, &certCollector{t: t, desc: prometheus.NewDesc(
		"meshlb_tls_cert_expiry_seconds", "Seconds until each served certificate name expires (negative: expired).", []string{"name"}, nil)})
	return t, nil
}

// getCertificate, with ACME on: a TLS-ALPN-01 validation gets its
// challenge certificate; otherwise a certificate file matching the name
// wins, then the mesh's managed one, then the files' default.
func (t *tlsServer) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if slices.Contains(hello.SupportedProtos, meshacme.ALPNProto) {
		return t.acme.alpnCertificate(hello.ServerName)
	}
	if c := t.store.Match(hello); c != nil {
		return c, nil
	}
	if c := t.acme.getCertificate(hello.ServerName); c != nil {
		return c, nil
	}
	return t.store.GetCertificate(hello)
}

// httpOnTLS is Go's own answer to plain HTTP on a TLS port
// (net/http.Server.serve), kept so that clients see the same thing.
const httpOnTLS = "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"

// handshake is the acceptor's prepare hook: it runs the TLS handshake on
// c under the head deadline the acceptor set, so a stalled handshake is
// cut by the handshake timeout, and returns the TLS connection. On
// failure it counts the reason, logs at debug and closes c.
func (t *tlsServer) handshake(c net.Conn, deadline time.Time) (net.Conn, bool) {
	_ = c.SetWriteDeadline(deadline)
	tc := tls.Server(c, t.base)
	err := tc.Handshake()
	if err == nil && tc.ConnectionState().NegotiatedProtocol == meshacme.ALPNProto {
		// A TLS-ALPN-01 validation is over once the handshake is (RFC 8737).
		c.Close()
		return nil, false
	}
	if err == nil {
		_ = c.SetWriteDeadline(time.Time{})
		resumed := "false"
		if tc.ConnectionState().DidResume {
			resumed = "true"
		}
		t.handshakes.WithLabelValues(resumed).Inc()
		return tc, true
	}
	reason := handshakeReason(err)
	if re, ok := errors.AsType[tls.RecordHeaderError](err); ok && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
		reason = "http_on_tls"
		_, _ = io.WriteString(re.Conn, httpOnTLS)
	}
	select {
	case <-t.acc.done: // aborted by Close, not by the client
	default:
		t.errors.WithLabelValues(reason).Inc()
		if e := t.log.Debug(); e.Enabled() {
			e.Err(err).Str("reason", reason).Str("remote_addr", c.RemoteAddr().String()).Msg("tls handshake failed")
		}
	}
	c.Close()
	return nil, false
}

func looksLikeHTTP(h [5]byte) bool {
	switch string(h[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "CONNE", "PATCH":
		return true
	}
	return false
}

func handshakeReason(err error) string {
	var re tls.RecordHeaderError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &re):
		return "not_tls"
	case errors.Is(err, tlsconf.ErrUnknownName):
		return "unknown_sni"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return "eof"
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "remote error" {
		return "client_alert" // the client refused us: an unknown CA, most often
	}
	return "handshake"
}

// markReady opens the gate once.
func (t *tlsServer) markReady() { t.once.Do(func() { close(t.ready) }) }

func (t *tlsServer) isReady() bool {
	select {
	case <-t.ready:
		return true
	default:
		return false
	}
}

// setKeys puts the mesh's keys in use when they differ from those in
// use. crypto/tls takes them under its own lock, so handshakes in flight
// are not disturbed; the first key encrypts, the rest decrypt.
func (t *tlsServer) setKeys(keys [][tlsconf.TicketKeyLen]byte) {
	t.mu.Lock()
	same := t.shared && len(keys) == len(t.keys)
	for i := 0; same && i < len(keys); i++ {
		same = keys[i] == t.keys[i]
	}
	if !same {
		t.keys, t.shared = keys, true
		t.base.SetSessionTicketKeys(keys)
	}
	t.mu.Unlock()
	t.markReady()
}

// reload loads the certificate files again, logging the outcome.
func (t *tlsServer) reload(why string) {
	changed, err := t.store.Reload()
	if err != nil {
		// Operator action: a renewed file is broken. Nothing stops
		// serving; the certificate it would have replaced stays.
		t.log.Error().Err(err).Str("trigger", why).Msg("tls certificate reload refused a file; the old certificate keeps serving")
	}
	if changed {
		t.log.Info().Str("trigger", why).Int("certificates", len(t.store.Certificates())).Msg("tls certificates reloaded")
		t.logSkipped()
	}
}

// logSkipped warns of the directory's files left out: a certificate
// whose key is missing is most likely a mistake.
func (t *tlsServer) logSkipped() {
	for _, s := range t.store.Skipped() {
		t.log.Warn().Str("detail", s).Msg("tls dir: a file without its other half is skipped")
	}
}

// watch polls the files and reloads on a change, until ctx ends.
func (t *tlsServer) watch(ctx context.Context) {
	tick := time.NewTicker(t.cfg.ReloadInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if t.store.Changed() {
				t.reload("file change")
			}
		}
	}
}

// ReloadTLS loads the TLS certificate files again (what SIGHUP does). A
// file that fails to load is logged and its old certificate kept. Safe
// to call at any time; a node without TLS does nothing.
func (n *Node) ReloadTLS() {
	if n.tls != nil {
		n.tls.reload("reload")
	}
}

// TLSAddr is the bound TLS listener address, or "" without TLS.
func (n *Node) TLSAddr() string {
	if n.tls == nil || n.tls.acc == nil {
		return ""
	}
	return addrOf(n.tls.acc)
}

// startTLS binds the TLS listener (PROXY protocol, when on, is read
// before the handshake) and returns the acceptor; its accept loop is
// started by serveTLS once the ticket keys are known.
func (n *Node) startTLS() error {
	t := n.tls
	ln, err := listen(t.cfg.Addr, "tls")
	if err != nil {
		return err
	}
	ln = n.withReserve(ln, "tls")
	if n.cfg.ProxyProtocol {
		ln = router.NewProxyProtocolListener(ln, n.cfg.Router.Key.TrustedProxies, n.cfg.HandshakeTimeout)
	}
	t.acc = newAcceptor(ln, withTLSState(n.router), n.cfg.HandshakeTimeout, n.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}))
	t.acc.prepare = t.handshake
	t.logSkipped()
	return nil
}

// serveTLS runs the TLS listener's loops: the proxy server on the
// acceptor, the accept loop once the gate opens, the file watch and the
// ticket keys.
func (n *Node) serveTLS(ctx context.Context) {
	t := n.tls
	n.wg.Go(func() { n.serve(n.proxySrv, t.acc, "tls") })
	n.wg.Go(func() {
		// Until the keys are known, connections wait in the kernel's
		// backlog: a client resuming through this node then finds the
		// mesh's keys, not a full handshake with keys of our own.
		select {
		case <-t.ready:
			t.acc.run()
		case <-t.acc.done:
		}
	})
	n.wg.Go(func() { t.watch(ctx) })
	n.wg.Go(func() { n.ticketLoop(ctx) })
	if t.acme != nil {
		n.wg.Go(func() { n.acmeLoop(ctx) })
	}
}

type tlsStateKey struct{}

// tlsConnContext puts the TLS state of a connection net/http serves in
// its context. net/http sets Request.TLS only for a *tls.Conn it accepted
// itself; ours come wrapped (guardConn, prefixConn).
func tlsConnContext(ctx context.Context, c net.Conn) context.Context {
	for range 4 {
		switch w := c.(type) {
		case *tls.Conn:
			st := w.ConnectionState()
			return context.WithValue(ctx, tlsStateKey{}, &st)
		case *guardConn:
			c = w.Conn
		case *prefixConn:
			c = w.Conn
		default:
			return ctx
		}
	}
	return ctx
}

// withTLSState sets Request.TLS from the connection's context, so the
// router sees https (X-Forwarded-Proto, Secure cookies) as net/http would
// have shown it.
func withTLSState(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r2 := *r
				r2.TLS = st
				r = &r2
			}
		}
		h.ServeHTTP(w, r)
	})
}

// TLSStatus is the TLS part of /v1/status.
type TLSStatus struct {
	Addr         string              `json:"addr"`
	Certificates []CertificateStatus `json:"certificates"`
	// TicketKeys is "mesh" (shared over gossip), "local" (this node's
	// own: no gossip key, or the mesh's are not known yet).
	TicketKeys string `json:"ticket_keys"`
	// ACME lists the managed domains, with --acme-domain.
	ACME []ACMEDomainStatus `json:"acme,omitempty"`
}

// CertificateStatus describes one served certificate.
type CertificateStatus struct {
	Names    []string  `json:"names"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	Source   string    `json:"source"`
	Default  bool      `json:"default,omitempty"`
}

func (n *Node) tlsStatus() *TLSStatus {
	t := n.tls
	if t == nil {
		return nil
	}
	s := &TLSStatus{Addr: n.TLSAddr(), TicketKeys: "local"}
	t.mu.Lock()
	if t.shared {
		s.TicketKeys = "mesh"
	}
	t.mu.Unlock()
	for i, c := range t.store.Certificates() {
		s.Certificates = append(s.Certificates, CertificateStatus{
			Names: c.Names, Issuer: c.Issuer, NotAfter: c.NotAfter.UTC(), Source: c.Source, Default: i == 0,
		})
	}
	if t.acme != nil {
		s.ACME = n.acmeStatus()
	}
	return s
}

// certCollector reports each certificate name's time to expiry at scrape
// time, so the gauge never goes stale between reloads.
type certCollector struct {
	t    *tlsServer
	desc *prometheus.Desc
}

var _ prometheus.Collector = (*certCollector)(nil)

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	seen := map[string]bool{}
	now := time.Now()
	for _, cert := range c.t.store.Certificates() {
		for _, name := range cert.Names {
			if seen[name] { // the first certificate serves a name: the one reported
				continue
			}
			seen[name] = true
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, cert.NotAfter.Sub(now).Seconds(), strings.Clone(name))
		}
	}
	if c.t.acme == nil {
		return
	}
	for name, cert := range *c.t.acme.certs.Load() {
		if !seen[name] { // a file's certificate wins the name
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, cert.Leaf.NotAfter.Sub(now).Seconds(), name)
		}
	}
}
