// Package tlsconf holds what a node needs to terminate TLS: the
// certificates, loaded from files and reloaded when the files change
// (Store), and the wire format and rotation rule of the session-ticket
// keys the mesh shares (tickets.go). It opens no sockets and starts no
// goroutines; node owns the listener and the loops.
package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxPEMFile bounds a certificate or key file: a chain of a few
// certificates is a few kB, so a larger file is a mistake (or a device).
const maxPEMFile = 1 << 20

// Pair names a certificate file (PEM, leaf first, then its chain) and its
// private key file.
type Pair struct {
	Cert, Key string
}

// Config says where the certificates are. The first pair is the default,
// served to a client whose SNI matches no certificate (or who sends
// none); the pairs of Dir, in name order, come after Pairs.
type Config struct {
	Pairs []Pair
	// Dir holds NAME.crt and NAME.key pairs; every *.crt needs its .key.
	Dir string
	// StrictSNI fails the handshake of a client whose SNI matches no
	// certificate, instead of serving the default.
	StrictSNI bool
	// AllowEmpty lets the store hold no certificate: another source
	// (ACME) serves the names, and a handshake no file matches fails.
	AllowEmpty bool
}

// Cert is one loaded certificate.
type Cert struct {
	Names    []string // DNS names and IP addresses of the leaf
	Issuer   string
	NotAfter time.Time
	Source   string // the certificate file
	KeyFile  string
	cert     *tls.Certificate
}

type snapshot struct {
	certs []*Cert // the default first
	exact map[string]*Cert
	wild  map[string]*Cert // "*.example.com" is held as "example.com"
}

// Store serves the current certificates to handshakes and swaps in new
// ones on Reload. GetCertificate is safe for concurrent use with Reload
// and costs a map lookup.
type Store struct {
	cfg Config
	cur atomic.Pointer[snapshot]

	mu      sync.Mutex // serialises Reload and Changed
	stamp   uint64     // of the files last loaded
	skipped []string   // Dir's files without their other half
}

// New loads every certificate. Any error fails: a node must not start
// without a certificate it was told to serve.
func New(cfg Config) (*Store, error) {
	cfg.Pairs = slices.Clone(cfg.Pairs)
	if len(cfg.Pairs) == 0 && cfg.Dir == "" && !cfg.AllowEmpty {
		return nil, errors.New("tls: no certificate: give a cert and key pair or a directory")
	}
	s := &Store{cfg: cfg}
	pairs, skipped, err := s.pairs()
	if err != nil {
		return nil, err
	}
	s.skipped = skipped
	var certs []*Cert
	var errs []error
	for _, p := range pairs {
		c, err := LoadPair(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		certs = append(certs, c)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.cur.Store(newSnapshot(certs))
	s.stamp = s.fileStamp(pairs)
	return s, nil
}

// pairs lists the configured pairs, then the directory's, and the
// directory's skipped files.
func (s *Store) pairs() ([]Pair, []string, error) {
	pairs := slices.Clone(s.cfg.Pairs)
	var skipped []string
	if s.cfg.Dir != "" {
		dp, sk, err := ListDir(s.cfg.Dir)
		if err != nil {
			return nil, nil, err
		}
		pairs, skipped = append(pairs, dp...), sk
	}
	return pairs, skipped, nil
}

// ListDir returns the NAME.crt/NAME.key pairs in dir, sorted by name,
// and a note for each .crt without its .key or .key without its .crt:
// those are skipped, as a CA's ca.crt beside tls.crt and tls.key (a
// cert-manager secret) must be. A directory without any pair is an
// error, with the notes.
func ListDir(dir string) (pairs []Pair, skipped []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("tls dir: %w", err)
	}
	have := make(map[string]bool, len(ents))
	for _, e := range ents {
		if !e.IsDir() {
			have[e.Name()] = true
		}
	}
	for _, e := range ents { // ReadDir sorts by name
		name := e.Name()
		if e.IsDir() {
			continue
		}
		switch filepath.Ext(name) {
		case ".crt":
			base := strings.TrimSuffix(name, ".crt")
			if !have[base+".key"] {
				skipped = append(skipped, fmt.Sprintf("%s has no %s.key beside it", filepath.Join(dir, name), base))
				continue
			}
			pairs = append(pairs, Pair{Cert: filepath.Join(dir, name), Key: filepath.Join(dir, base+".key")})
		case ".key":
			if base := strings.TrimSuffix(name, ".key"); !have[base+".crt"] {
				skipped = append(skipped, fmt.Sprintf("%s has no %s.crt beside it", filepath.Join(dir, name), base))
			}
		}
	}
	if len(pairs) == 0 {
		msg := fmt.Sprintf("tls dir: no NAME.crt and NAME.key pair in %s", dir)
		if len(skipped) > 0 {
			msg += " (" + strings.Join(skipped, "; ") + ")"
		}
		return nil, skipped, errors.New(msg)
	}
	return pairs, skipped, nil
}

// Skipped lists the files of the directory left out at the last load or
// reload, each with why.
func (s *Store) Skipped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.skipped)
}

// readPEM reads a file of at most maxPEMFile bytes.
func readPEM(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a certificate file", path, maxPEMFile)
	}
	return b, nil
}

// LoadPair loads and checks one pair. The errors name the files; they
// never hold key material (crypto/tls's do not either).
func LoadPair(p Pair) (*Cert, error) {
	certPEM, err := readPEM(p.Cert)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	keyPEM, err := readPEM(p.Key)
	if err != nil {
		return nil, fmt.Errorf("tls key: %w", err)
	}
	return parsePair(p, certPEM, keyPEM)
}

func parsePair(p Pair, certPEM, keyPEM []byte) (*Cert, error) {
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls pair %s and %s: %w", p.Cert, p.Key, err)
	}
	leaf := tc.Leaf
	if leaf == nil { // set by X509KeyPair since Go 1.23; kept for safety
		if leaf, err = x509.ParseCertificate(tc.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls certificate %s: %w", p.Cert, err)
		}
		tc.Leaf = leaf
	}
	c := &Cert{Issuer: leaf.Issuer.String(), NotAfter: leaf.NotAfter, Source: p.Cert, KeyFile: p.Key, cert: &tc}
	for _, n := range leaf.DNSNames {
		c.Names = append(c.Names, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	for _, ip := range leaf.IPAddresses {
		c.Names = append(c.Names, ip.String())
	}
	if len(c.Names) == 0 && leaf.Subject.CommonName != "" {
		// Clients ignore the common name since Go 1.15 and Chrome 58, but
		// naming the certificate by it still helps the status page.
		c.Names = []string{strings.ToLower(leaf.Subject.CommonName)}
	}
	return c, nil
}

func newSnapshot(certs []*Cert) *snapshot {
	sn := &snapshot{certs: certs, exact: map[string]*Cert{}, wild: map[string]*Cert{}}
	// Earlier certificates win a name: the order the operator gave.
	for _, c := range certs {
		for _, n := range c.Names {
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				if _, dup := sn.wild[rest]; !dup {
					sn.wild[rest] = c
				}
			} else if _, dup := sn.exact[n]; !dup {
				sn.exact[n] = c
			}
		}
	}
	return sn
}

// ErrUnknownName fails the handshake of a client whose SNI matches no
// certificate, with StrictSNI.
var ErrUnknownName = errors.New("tls: no certificate for the server name")

// lookup returns the certificate for an SNI name, or nil.
func (sn *snapshot) lookup(name string) *Cert {
	if name == "" {
		return nil
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if c, ok := sn.exact[name]; ok {
		return c
	}
	if _, rest, ok := strings.Cut(name, "."); ok {
		if c, ok := sn.wild[rest]; ok {
			return c
		}
	}
	return nil
}

// GetCertificate is tls.Config.GetCertificate: the certificate whose
// names match the client's SNI (exact, then one-label wildcard), else the
// default, or ErrUnknownName with StrictSNI. A client that connects by IP
// address sends no SNI; it is matched on the local address against the
// certificates' IP addresses.
func (s *Store) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	sn := s.cur.Load()
	name := hello.ServerName
	if name == "" && hello.Conn != nil {
		if host, _, err := net.SplitHostPort(hello.Conn.LocalAddr().String()); err == nil {
			name = host
		}
	}
	if c := sn.lookup(name); c != nil {
		return c.cert, nil
	}
	if s.cfg.StrictSNI || len(sn.certs) == 0 {
		return nil, ErrUnknownName
	}
	return sn.certs[0].cert, nil
}

// Match returns the certificate whose names match the client's SNI, or
// nil: no default, so that another source may serve the name.
func (s *Store) Match(hello *tls.ClientHelloInfo) *tls.Certificate {
	if c := s.cur.Load().lookup(hello.ServerName); c != nil {
		return c.cert
	}
	return nil
}

// Certificates returns the certificates served now, the default first.
func (s *Store) Certificates() []Cert {
	sn := s.cur.Load()
	out := make([]Cert, len(sn.certs))
	for i, c := range sn.certs {
		out[i] = *c
		out[i].Names = slices.Clone(c.Names)
		out[i].cert = nil
	}
	return out
}

// Changed reports whether the files (or the directory's list of pairs)
// differ in size or modification time from what was last loaded. It
// reads no file content: cheap enough to poll every second.
func (s *Store) Changed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	pairs, _, err := s.pairs()
	if err != nil {
		// A directory emptied or half-written: Reload will report it.
		return true
	}
	return s.fileStamp(pairs) != s.stamp
}

func (s *Store) fileStamp(pairs []Pair) uint64 {
	h := fnv.New64a()
	for _, p := range pairs {
		for _, f := range []string{p.Cert, p.Key} {
			fmt.Fprint(h, f, "\x00")
			if fi, err := os.Stat(f); err == nil {
				fmt.Fprint(h, fi.Size(), fi.ModTime().UnixNano(), "\x00")
			}
		}
	}
	return h.Sum64()
}

// Reload loads the files again. Each certificate whose new files load
// replaces its old one; one whose new files fail keeps serving the old
// certificate (if there was one), and the errors, naming the files, are
// returned. A reload that would leave no certificate at all changes
// nothing. Connections already open are never touched: the snapshot is
// only read by new handshakes.
func (s *Store) Reload() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	pairs, skipped, err := s.pairs()
	var errs []error
	if err != nil {
		// A directory that lost a file mid-renewal: keep everything.
		return false, err
	}
	s.skipped = skipped
	// Taken even when a file fails: the next attempt is on the next
	// change of the files, so a broken file is reported once, not on
	// every poll.
	s.stamp = s.fileStamp(pairs)
	byCert := make(map[string]*Cert, len(old.certs))
	for _, c := range old.certs {
		byCert[c.Source+"\x00"+c.KeyFile] = c
	}
	certs := make([]*Cert, 0, len(pairs))
	for _, p := range pairs {
		c, err := LoadPair(p)
		if err != nil {
			errs = append(errs, err)
			if prev, ok := byCert[p.Cert+"\x00"+p.Key]; ok {
				certs = append(certs, prev)
			}
			continue
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 && (len(old.certs) > 0 || !s.cfg.AllowEmpty) {
		return false, errors.Join(append(errs, errors.New("tls reload: no certificate would be left; keeping the old ones"))...)
	}
	if sameCerts(old.certs, certs) {
		return false, errors.Join(errs...)
	}
	s.cur.Store(newSnapshot(certs))
	return true, errors.Join(errs...)
}

func sameCerts(a, b []*Cert) bool {
	return slices.EqualFunc(a, b, func(x, y *Cert) bool {
		return x == y || (x.Source == y.Source && slices.EqualFunc(x.cert.Certificate, y.cert.Certificate, bytes.Equal))
	})
}
