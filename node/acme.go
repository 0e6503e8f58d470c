package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/meshacme"
)

// The ACME kinds (8, 9 and 10; see kinds.go). Challenges and records
// hold nothing secret; the chunks carry certificate keys and are Secret,
// so they never travel without the gossip key.
const (
	kindACMEChallenge gossip.Kind = 8  // "c/DOMAIN/TOKEN" answers, "a/DOMAIN/TOKEN/NODE" acks
	kindACMEChunk     gossip.Kind = 9  // "DOMAIN/SERIAL/I": a piece of a key and chain (Secret)
	kindACMERecord    gossip.Kind = 10 // "DOMAIN": the certificate to serve and the orderer's state
)

// maxACMEDomains bounds --acme-domain so that the chunks fit their kind's
// budget: two certificates of some 5 kB per domain while one renews.
const maxACMEDomains = 10

// acmeKinds take 160 KiB of the kinds' budget: chunks 112 KiB (two
// bundles of up to 10 chunks for each of 10 domains, and a day of
// tombstones), challenges and acks 32 KiB (an ack is some 80 bytes: 400
// nodes answering one challenge at once), records 16 KiB.
func acmeKinds() []gossip.KindSpec {
	return []gossip.KindSpec{
		{
			Kind: kindACMEChallenge, Name: "acme_challenge",
			MaxValue: 300, MaxEntries: 1024, MaxBytes: 32 << 10,
			Validate: meshacme.ValidateChallengeEntry,
			RelayAll: true, // the CA asks any node, soon
		},
		{
			Kind: kindACMEChunk, Name: "acme_chunk",
			MaxValue: meshacme.ChunkSize, MaxEntries: 1024, MaxBytes: 112 << 10,
			Validate: meshacme.ValidateChunk,
			Secret:   true,
			RelayAll: true,
		},
		{
			Kind: kindACMERecord, Name: "acme_record",
			MaxValue: meshacme.MaxRecord, MaxEntries: 32, MaxBytes: 16 << 10,
			Validate: func(key string, value []byte) error {
				_, err := meshacme.DecodeRecord(key, value)
				return err
			},
			RelayAll: true,
		},
	}
}

// ACMEConfig gets the TLS listener's certificates from an ACME CA, one
// node ordering each domain for the mesh. Off without Domains.
type ACMEConfig struct {
	Domains []string
	// CA is the directory URL. Default Let's Encrypt's production one.
	CA    string
	Email string
	// CARoot is a PEM file of roots trusted for the CA's own HTTPS, beside
	// the system's: for a private or test CA.
	CARoot string
	// Challenge is http-01 (answered on the plain listener, which must be
	// port 80 to the CA) or tls-alpn-01 (on the TLS listener, port 443).
	Challenge string
	// DataDir holds the account key and a copy of each certificate.
	DataDir string
	// Takeover is how long past a renewal's due time the next node in
	// rank waits for the first before ordering itself. Default 10 min.
	Takeover time.Duration
}

func (c ACMEConfig) withDefaults() ACMEConfig {
	if len(c.Domains) == 0 {
		return c
	}
	c.Domains = slices.Clone(c.Domains)
	if c.CA == "" {
		c.CA = meshacme.LetsEncrypt
	}
	if c.Challenge == "" {
		c.Challenge = meshacme.HTTP01
	}
	if c.Takeover <= 0 {
		c.Takeover = 10 * time.Minute
	}
	return c
}

func (c ACMEConfig) validate(n Config) error {
	if len(c.Domains) == 0 {
		if c.Email != "" || c.CARoot != "" {
			return errors.New("acme: email or ca root given without --acme-domain")
		}
		return nil
	}
	var errs []error
	if len(c.Domains) > maxACMEDomains {
		errs = append(errs, fmt.Errorf("acme: %d domains, at most %d", len(c.Domains), maxACMEDomains))
	}
	seen := map[string]bool{}
	for _, d := range c.Domains {
		if err := meshacme.ValidateDomain(d); err != nil {
			errs = append(errs, err)
		}
		if seen[d] {
			errs = append(errs, fmt.Errorf("acme domain %q given twice", d))
		}
		seen[d] = true
	}
	if c.Challenge != meshacme.HTTP01 && c.Challenge != meshacme.TLSALPN01 {
		errs = append(errs, fmt.Errorf("acme challenge %q: want http-01 or tls-alpn-01", c.Challenge))
	}
	if !strings.HasPrefix(c.CA, "https://") {
		errs = append(errs, fmt.Errorf("acme ca %q: want an https:// directory URL", c.CA))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("acme: --data-dir is needed: the account key and certificates are kept there"))
	}
	if n.TLS.Addr == "" {
		errs = append(errs, errors.New("acme: --listen-tls is needed: the certificates are served there"))
	}
	if n.Gossip.SecretKey == nil {
		errs = append(errs, errors.New("acme: --gossip-key is needed: certificate keys travel between nodes only encrypted"))
	}
	return errors.Join(errs...)
}

// acmeManager holds the certificates the mesh got and the challenges it
// answers, and on this node orders the domains it ranks first for.
type acmeManager struct {
	cfg     ACMEConfig
	dir     string
	log     zerolog.Logger
	started time.Time

	certs atomic.Pointer[map[string]*meshacme.Cert] // by domain
	chal  atomic.Pointer[acmeChallenges]

	client *meshacme.Client
	mu     sync.Mutex // guards local, members, membersAt
	local  map[string]*acmeLocal
	// members are the orderers last seen, membersAt when they changed:
	// nobody orders until the set has held still a while.
	members   []string
	membersAt time.Time

	orders   *prometheus.CounterVec
	answered *prometheus.CounterVec
	installs *prometheus.CounterVec
}

// acmeLocal is this node's own view of ordering one domain.
type acmeLocal struct {
	ordering bool
	failures int
	nextTry  time.Time
	lastErr  string
}

type acmeChallenges struct {
	http map[string]string           // token → key authorization
	alpn map[string]*tls.Certificate // domain → validation certificate
	keys map[string]string           // domain → key authorization behind alpn
}

func newACMEManager(cfg ACMEConfig, log zerolog.Logger, reg prometheus.Registerer) (*acmeManager, error) {
	m := &acmeManager{
		cfg: cfg, dir: filepath.Join(cfg.DataDir, "acme"), started: time.Now(),
		log:   log.With().Str("component", "acme").Logger(),
		local: map[string]*acmeLocal{},
	}
	// The account key and the CA's roots are read (the key made) now, so
	// a bad file stops the start rather than every order.
	var err error
	if m.client, err = meshacme.NewClient(cfg.CA, cfg.Email, cfg.CARoot, m.dir); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	m.certs.Store(&map[string]*meshacme.Cert{})
	m.chal.Store(&acmeChallenges{})
	for _, d := range cfg.Domains {
		m.local[d] = &acmeLocal{}
	}
	m.orders = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlb_acme_orders_total", Help: "Certificate orders this node made, by result (ok, error).",
	}, []string{"result"})
	m.answered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlb_acme_challenges_answered_total", Help: "ACME validation requests this node answered, by challenge type.",
	}, []string{"type"})
	m.installs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshlb_acme_certificates_installed_total", Help: "Managed certificates put in service, by where they came from (mesh, disk, order).",
	}, []string{"source"})
	for _, r := range []string{"ok", "error"} {
		m.orders.WithLabelValues(r)
	}
	reg.MustRegister(m.orders, m.answered, m.installs)
	m.loadDisk()
	return m, nil
}

// loadDisk serves what the last run kept, before any gossip: a restarted
// node answers with its certificates at once.
func (m *acmeManager) loadDisk() {
	for _, d := range m.cfg.Domains {
		c, err := meshacme.Load(meshacme.Path(m.dir, d))
		switch {
		case errors.Is(err, os.ErrNotExist):
			continue
		case err != nil:
			m.log.Warn().Err(err).Str("domain", d).Msg("acme certificate on disk refused")
			continue
		case c.Leaf.VerifyHostname(d) != nil:
			m.log.Warn().Str("domain", d).Msg("acme certificate on disk is not for its domain")
			continue
		}
		m.install(d, c)
		m.installs.WithLabelValues("disk").Inc()
		m.log.Info().Str("domain", d).Str("serial", c.Serial).Time("not_after", c.Leaf.NotAfter).Msg("acme certificate loaded from disk")
	}
}

func (m *acmeManager) cert(domain string) *meshacme.Cert { return (*m.certs.Load())[domain] }

func (m *acmeManager) install(domain string, c *meshacme.Cert) {
	next := map[string]*meshacme.Cert{}
	for k, v := range *m.certs.Load() {
		next[k] = v
	}
	next[domain] = c
	m.certs.Store(&next)
}

// getCertificate serves a managed certificate by SNI, or nil.
func (m *acmeManager) getCertificate(name string) *tls.Certificate {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if c := m.cert(name); c != nil {
		return c.TLS
	}
	return nil
}

// alpnCertificate is the TLS-ALPN-01 answer for name.
func (m *acmeManager) alpnCertificate(name string) (*tls.Certificate, error) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if c := m.chal.Load().alpn[name]; c != nil {
		m.answered.WithLabelValues(meshacme.TLSALPN01).Inc()
		return c, nil
	}
	return nil, errors.New("acme: no tls-alpn-01 challenge pending for the name")
}

// serveHTTP01 answers the CA's HTTP-01 requests from the replicated
// tokens; it reports false for every other path.
func (m *acmeManager) serveHTTP01(w http.ResponseWriter, r *http.Request) bool {
	token, ok := strings.CutPrefix(r.URL.Path, meshacme.HTTPPath)
	if !ok {
		return false
	}
	ka, ok := m.chal.Load().http[token]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return true
	}
	m.answered.WithLabelValues(meshacme.HTTP01).Inc()
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(ka))
	return true
}

// acmeHTTP puts the HTTP-01 answers in front of h (the plain listener's
// handler), when ACME is on.
func (n *Node) acmeHTTP(h http.Handler) http.Handler {
	if n.tls == nil || n.tls.acme == nil {
		return h
	}
	m := n.tls.acme
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !m.serveHTTP01(w, r) {
			h.ServeHTTP(w, r)
		}
	})
}

// acmeLoop follows the mesh's ACME state: it installs the certificates
// the records name, answers and acknowledges challenges, and orders the
// domains this node ranks first for when they are due.
func (n *Node) acmeLoop(ctx context.Context) {
	m := n.tls.acme
	for _, d := range m.cfg.Domains {
		if n.tls.store.Match(&tls.ClientHelloInfo{ServerName: d}) != nil {
			m.log.Warn().Str("domain", d).Msg("a certificate file covers an acme domain; the file's certificate is served")
		}
	}
	changes := n.cluster.Subscribe()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		n.acmeTick(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-changes:
		case <-tick.C:
		}
	}
}

func (n *Node) acmeTick(ctx context.Context, now time.Time) {
	m := n.tls.acme
	n.acmeChallengesSeen()
	n.acmeSweep(now)
	for _, d := range m.cfg.Domains {
		rec, ok := n.acmeRecord(d)
		if ok && rec.Serial != "" {
			n.acmeInstall(d, rec)
		}
		n.acmeMaybeOrder(ctx, d, rec, ok, now)
	}
}

func (n *Node) acmeRecord(d string) (meshacme.Record, bool) {
	e, ok := n.cluster.Get(kindACMERecord, d)
	if !ok || e.Deleted {
		return meshacme.Record{}, false
	}
	r, err := meshacme.DecodeRecord(d, e.Value)
	return r, err == nil
}

// acmeChallengesSeen rebuilds the answers from the replicated challenges
// and acknowledges, once it can answer them, those of this mesh's
// domains.
func (n *Node) acmeChallengesSeen() {
	m := n.tls.acme
	old := m.chal.Load()
	next := &acmeChallenges{http: map[string]string{}, alpn: map[string]*tls.Certificate{}, keys: map[string]string{}}
	entries := n.cluster.Entries(kindACMEChallenge)
	acked := map[string]bool{}
	for _, e := range entries {
		if ack, _, _, node, err := meshacme.ParseChallengeKey(e.Key); err == nil && ack && node == n.cfg.Name && !e.Deleted {
			acked[e.Key] = true
		}
	}
	var toAck []string
	for _, e := range entries {
		ack, d, token, _, err := meshacme.ParseChallengeKey(e.Key)
		if err != nil || ack || e.Deleted || !slices.Contains(m.cfg.Domains, d) {
			continue
		}
		typ, ka, err := meshacme.DecodeChallenge(token, e.Value)
		if err != nil {
			continue
		}
		switch typ {
		case meshacme.HTTP01:
			next.http[token] = ka
		case meshacme.TLSALPN01:
			if old.keys[d] == ka && old.alpn[d] != nil {
				next.alpn[d], next.keys[d] = old.alpn[d], ka
			} else if c, err := meshacme.ALPNCert(d, ka); err == nil {
				next.alpn[d], next.keys[d] = c, ka
			} else {
				m.log.Error().Err(err).Str("domain", d).Msg("acme tls-alpn-01 certificate not made")
				continue
			}
		}
		if k := meshacme.AckKey(d, token, n.cfg.Name); !acked[k] {
			toAck = append(toAck, k)
		}
	}
	m.chal.Store(next)
	for _, k := range toAck { // after the answers are in place
		if _, err := n.cluster.Put(kindACMEChallenge, k, nil); err != nil {
			m.log.Warn().Err(err).Msg("acme challenge ack failed")
		}
	}
}

// acmeStaleAfter is how old a challenge or ack written by a node no
// longer in the mesh must be before it is swept: far past any order.
const acmeStaleAfter = 15 * time.Minute

// acmeSweep deletes, on the node ranked first for a domain, the
// challenges and acks an orderer that died mid-order left behind; a
// living orderer withdraws its own.
func (n *Node) acmeSweep(now time.Time) {
	if !n.cluster.Synced() {
		return
	}
	live := n.acmeOrderers()
	for _, e := range n.cluster.Entries(kindACMEChallenge) {
		if e.Deleted || slices.Contains(live, e.Origin) || now.Sub(e.Time()) < acmeStaleAfter {
			continue
		}
		_, d, _, _, err := meshacme.ParseChallengeKey(e.Key)
		if r := meshacme.Rank(d, live); err == nil && len(r) > 0 && r[0] == n.cfg.Name {
			n.acmeDelete(kindACMEChallenge, e.Key)
		}
	}
}

// acmeInstall puts the record's certificate in service once every chunk
// is here and the set checks out, and keeps a copy on disk.
func (n *Node) acmeInstall(d string, rec meshacme.Record) {
	m := n.tls.acme
	cur := m.cert(d)
	if cur != nil && (cur.Serial == rec.Serial || !rec.NotAfter.After(cur.Leaf.NotAfter)) {
		return // have it, or hold a newer one (from disk, or our own order)
	}
	chunks := make([][]byte, 0, rec.Chunks)
	for i := range rec.Chunks {
		e, ok := n.cluster.Get(kindACMEChunk, meshacme.ChunkKey(d, rec.Serial, i))
		if !ok || e.Deleted {
			return // still coming
		}
		chunks = append(chunks, e.Value)
	}
	b, err := meshacme.Join(rec, chunks)
	if err == nil {
		var c *meshacme.Cert
		if c, err = meshacme.ParseBundle(b); err == nil {
			if err = c.Leaf.VerifyHostname(d); err == nil && c.Serial != rec.Serial {
				err = errors.New("serial differs from the record's")
			}
			if err == nil {
				n.acmePutInService(d, c, "mesh")
				return
			}
		}
	}
	if m.log.Debug().Enabled() {
		m.log.Debug().Err(err).Str("domain", d).Str("serial", rec.Serial).Msg("acme certificate from the mesh refused")
	}
}

// acmePutInService saves c to disk first, then serves it: a certificate
// in service is one a restart finds on disk (a node killed between the two
// came back with the previous one, seen in CI).
func (n *Node) acmePutInService(d string, c *meshacme.Cert, source string) {
	m := n.tls.acme
	if err := meshacme.Save(meshacme.Path(m.dir, d), c); err != nil {
		m.log.Error().Err(err).Str("domain", d).Msg("acme certificate not saved to disk; a restart waits for the mesh")
	}
	m.install(d, c)
	m.installs.WithLabelValues(source).Inc()
	m.log.Info().Str("domain", d).Str("serial", c.Serial).Str("source", source).Time("not_after", c.Leaf.NotAfter).Msg("acme certificate in service")
}

// acmeOrderers are the live members that may order, by name.
func (n *Node) acmeOrderers() []string {
	var out []string
	for _, mb := range n.cluster.Members() {
		if mb.MetaErr == nil && mb.Meta.Role == gossip.RoleBalancer && mb.Meta.State == gossip.NodeActive {
			out = append(out, mb.Name)
		}
	}
	return out
}

// acmeSettle is how long the live members must stay the same before a
// node orders: nodes starting together otherwise each rank first among
// the few they know yet, and order the same certificate twice.
const acmeSettle = 2 * time.Second

// acmeOrderTimeout bounds one order; a record still "ordering" by a live
// member past it is taken as stuck.
const acmeOrderTimeout = 5 * time.Minute

// acmeMaybeOrder starts an order of d when it is due and this node's
// turn: the first in rank at the due time, the next a takeover later
// (the first is stuck, or gone but not yet known to be).
func (n *Node) acmeMaybeOrder(ctx context.Context, d string, rec meshacme.Record, haveRec bool, now time.Time) {
	m := n.tls.acme
	if !n.cluster.Synced() || n.draining.Load() {
		return // a node that has not seen the mesh must not order what it holds
	}
	live := n.acmeOrderers()
	m.mu.Lock()
	if !slices.Equal(live, m.members) {
		m.members, m.membersAt = live, now
	}
	settled := now.Sub(m.membersAt) >= acmeSettle
	m.mu.Unlock()
	if !settled {
		return // a mesh still forming ranks differently on each node
	}
	rank := slices.Index(meshacme.Rank(d, live), n.cfg.Name)
	if rank < 0 {
		return
	}
	if haveRec && (rec.State == meshacme.StateOrdering || rec.State == meshacme.StateRenewing) &&
		rec.By != n.cfg.Name && slices.Contains(live, rec.By) && now.Sub(rec.At) < acmeOrderTimeout {
		return // a live member is at it; one past the order timeout is stuck
	}
	due := m.started
	if haveRec && rec.Serial != "" {
		life := rec.NotAfter.Sub(rec.NotBefore)
		due = rec.NotBefore.Add(life * 2 / 3)
	} else if c := m.cert(d); c != nil {
		due = meshacme.RenewAt(c.Leaf)
	}
	if now.Before(due.Add(time.Duration(rank) * m.cfg.Takeover)) {
		return
	}
	m.mu.Lock()
	l := m.local[d]
	if l.ordering || now.Before(l.nextTry) {
		m.mu.Unlock()
		return
	}
	l.ordering = true
	m.mu.Unlock()
	n.wg.Go(func() { n.acmeOrder(ctx, m.client, d) })
}

func (n *Node) acmeOrder(ctx context.Context, client *meshacme.Client, d string) {
	m := n.tls.acme
	start := time.Now()
	state := meshacme.StateOrdering
	if m.cert(d) != nil {
		state = meshacme.StateRenewing
	}
	n.acmeSetState(d, state, "")
	m.log.Info().Str("domain", d).Str("state", state).Msg("acme order started")
	octx, cancel := context.WithTimeout(ctx, acmeOrderTimeout)
	c, err := client.Obtain(octx, d, m.cfg.Challenge, acmePublisher{n})
	cancel()
	if err == nil {
		err = n.acmePublish(d, c)
	}
	m.mu.Lock()
	l := m.local[d]
	l.ordering = false
	if err != nil {
		l.failures++
		// 10 s, doubling, at most 1 h: a CA's rate limits count failures.
		l.nextTry = time.Now().Add(min(10*time.Second<<min(l.failures-1, 9), time.Hour))
		l.lastErr = err.Error()
	} else {
		l.failures, l.nextTry, l.lastErr = 0, time.Time{}, ""
	}
	next := l.nextTry
	m.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		m.orders.WithLabelValues("error").Inc()
		m.log.Error().Err(err).Str("domain", d).Time("next_try", next).Msg("acme order failed")
		n.acmeSetState(d, meshacme.StateFailed, err.Error())
		return
	}
	m.orders.WithLabelValues("ok").Inc()
	m.log.Info().Str("domain", d).Str("serial", c.Serial).Dur("took", time.Since(start)).Time("not_after", c.Leaf.NotAfter).Msg("acme order done")
}

// acmePublish spreads a new certificate: its chunks first, then the
// record naming it, so a node never sees a record whose chunks cannot
// come; the previous certificate's chunks then go.
func (n *Node) acmePublish(d string, c *meshacme.Cert) error {
	chunks, sum, err := meshacme.Split(meshacme.Bundle(c.KeyDER, c.Chain))
	if err != nil {
		return err
	}
	for i, ch := range chunks {
		if _, err := n.cluster.Put(kindACMEChunk, meshacme.ChunkKey(d, c.Serial, i), ch); err != nil {
			return fmt.Errorf("replicate certificate: %w", err)
		}
	}
	var old meshacme.Record
	_, err = n.cluster.Update(kindACMERecord, d, func(cur gossip.Entry, ok bool) (gossip.Entry, bool, error) {
		if ok && !cur.Deleted {
			old, _ = meshacme.DecodeRecord(d, cur.Value)
		}
		v, err := meshacme.Record{
			Serial: c.Serial, Chunks: len(chunks), Sum: sum, NotBefore: c.Leaf.NotBefore, NotAfter: c.Leaf.NotAfter,
			State: meshacme.StateValid, By: n.cfg.Name, At: time.Now(),
		}.Encode()
		return gossip.Entry{Value: v}, true, err
	})
	if err != nil {
		return fmt.Errorf("replicate certificate record: %w", err)
	}
	n.acmePutInService(d, c, "order")
	if old.Serial != "" && old.Serial != c.Serial {
		for i := range old.Chunks {
			n.acmeDelete(kindACMEChunk, meshacme.ChunkKey(d, old.Serial, i))
		}
	}
	return nil
}

// acmeDelete leaves a tombstone without the value: a key's chunk must
// not ride a day of tombstones around the mesh.
func (n *Node) acmeDelete(k gossip.Kind, key string) {
	_, err := n.cluster.Update(k, key, func(cur gossip.Entry, ok bool) (gossip.Entry, bool, error) {
		if !ok || cur.Deleted {
			return cur, false, nil
		}
		return gossip.Entry{Deleted: true}, true, nil
	})
	if err != nil {
		n.tls.acme.log.Warn().Err(err).Str("key", key).Msg("acme entry delete failed")
	}
}

// acmeSetState writes the orderer's state into d's record, keeping the
// certificate it names.
func (n *Node) acmeSetState(d, state, msg string) {
	_, err := n.cluster.Update(kindACMERecord, d, func(cur gossip.Entry, ok bool) (gossip.Entry, bool, error) {
		var r meshacme.Record
		if ok && !cur.Deleted {
			r, _ = meshacme.DecodeRecord(d, cur.Value)
		}
		r.State, r.By, r.Err, r.At = state, n.cfg.Name, msg, time.Now()
		v, err := r.Encode()
		return gossip.Entry{Value: v}, true, err
	})
	if err != nil {
		n.tls.acme.log.Warn().Err(err).Str("domain", d).Msg("acme state not replicated")
	}
}

// acmePublisher spreads challenges over gossip and waits for every live
// member's ack.
type acmePublisher struct{ n *Node }

// acmeAckWait bounds the wait for acks: past it the CA is asked anyway
// (a member that is not answering is most likely on its way out).
const acmeAckWait = 30 * time.Second

func (p acmePublisher) Publish(ctx context.Context, d, token, typ, keyAuth string) error {
	n := p.n
	if _, err := n.cluster.Put(kindACMEChallenge, meshacme.ChallengeKey(d, token), meshacme.EncodeChallenge(typ, keyAuth)); err != nil {
		return err
	}
	n.acmeChallengesSeen()
	wait := time.NewTimer(acmeAckWait)
	defer wait.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 1; ; i++ {
		var missing []string
		for _, name := range n.acmeOrderers() {
			if e, ok := n.cluster.Get(kindACMEChallenge, meshacme.AckKey(d, token, name)); !ok || e.Deleted {
				missing = append(missing, name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if i%20 == 0 {
			// Gossip is lossy: written again, the answer is sent again
			// rather than waiting for a full-state exchange.
			if _, err := n.cluster.Put(kindACMEChallenge, meshacme.ChallengeKey(d, token), meshacme.EncodeChallenge(typ, keyAuth)); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wait.C:
			n.tls.acme.log.Warn().Str("domain", d).Strs("missing", missing).Msg("acme challenge not acknowledged by every node; asking the ca anyway")
			return nil
		case <-tick.C:
		}
	}
}

func (p acmePublisher) Withdraw(d, token string) {
	n := p.n
	n.acmeDelete(kindACMEChallenge, meshacme.ChallengeKey(d, token))
	prefix := "a/" + d + "/" + token + "/"
	for _, e := range n.cluster.Entries(kindACMEChallenge) {
		if strings.HasPrefix(e.Key, prefix) && !e.Deleted {
			n.acmeDelete(kindACMEChallenge, e.Key)
		}
	}
}

// ACMEDomainStatus is one managed domain in /v1/status.
type ACMEDomainStatus struct {
	Domain string `json:"domain"`
	// State is ordering (no certificate yet), renewing, failed or valid,
	// as the mesh's record says.
	State      string    `json:"state"`
	ValidUntil time.Time `json:"valid_until,omitzero"`
	Serial     string    `json:"serial,omitempty"` // of the certificate this node serves
	// Orderer is the node that orders the domain now (first in rank);
	// LastBy wrote the record's state.
	Orderer   string `json:"orderer"`
	LastBy    string `json:"last_by,omitempty"`
	LastError string `json:"last_error,omitempty"`
}

func (n *Node) acmeStatus() []ACMEDomainStatus {
	m := n.tls.acme
	orderers := n.acmeOrderers()
	var out []ACMEDomainStatus
	for _, d := range m.cfg.Domains {
		s := ACMEDomainStatus{Domain: d, State: meshacme.StateOrdering}
		if r := meshacme.Rank(d, orderers); len(r) > 0 {
			s.Orderer = r[0]
		}
		if rec, ok := n.acmeRecord(d); ok {
			s.State, s.LastBy, s.LastError = rec.State, rec.By, rec.Err
		}
		if c := m.cert(d); c != nil {
			s.ValidUntil, s.Serial = c.Leaf.NotAfter.UTC(), c.Serial
			if s.State == meshacme.StateOrdering {
				s.State = meshacme.StateValid // ours from disk; the mesh's record has not come yet
			}
		}
		out = append(out, s)
	}
	return out
}
