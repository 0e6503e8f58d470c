package node

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The admin API's gate: one middleware in front of the whole admin mux, so
// that a route added to the mux later is covered without a word. In order,
// every request is checked for:
//
//  1. its Host (DNS rebinding): an IP literal, localhost, or a name in
//     Config.AdminHosts (or none, HTTP/1.0). A rebinding page reaches us
//     under its own name, so refusing unknown names is enough; an IP
//     literal cannot be rebound.
//  2. its Origin, if sent: our own or one in Config.AdminAllowedOrigins.
//     And for a change (any method but GET, HEAD, OPTIONS), Content-Type
//     application/json. A page a browser shows can send a cross-site
//     "simple" request (a form or a text/plain POST) without asking;
//     application/json makes the browser ask first (a CORS preflight),
//     which we never grant.
//  3. with a token file: a bearer token of the right role. Read tokens may
//     GET; write tokens may do everything. /healthz, /readyz and /metrics
//     stay open (load balancers and Prometheus probe them) unless
//     Config.AdminAuthAll; /v1/keys and /debug/pprof/ want write even to
//     read (keys are secrets; a profile costs CPU and shows the command
//     line).

// Role is what a token may do.
type Role uint8

const (
	RoleNone  Role = iota
	RoleRead       // GET (and HEAD) of any endpoint but the write-only ones
	RoleWrite      // everything
)

func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	}
	return "none"
}

// maxTokenFile bounds the token file; a line is well under 200 bytes.
const maxTokenFile = 1 << 20

// minTokenLen keeps guessable tokens out: 16 bytes of base64 or hex is
// already 64 bits or more.
const minTokenLen = 16

// tokenSet holds the hashes of the tokens and their roles. Lookups hash the
// presented token and compare it with every entry in constant time, so
// neither a token's bytes nor its position can be timed.
type tokenSet struct {
	hashes [][sha256.Size]byte
	roles  []Role
}

// parseTokenFile reads lines "TOKEN ROLE" (role read or write); blank
// lines and lines starting with # are skipped. A token is printable ASCII
// without spaces, at least 16 bytes. Errors name the line, never the token.
func parseTokenFile(b []byte) (*tokenSet, error) {
	if len(b) > maxTokenFile {
		return nil, fmt.Errorf("token file larger than %d bytes", maxTokenFile)
	}
	ts := &tokenSet{}
	seen := map[[sha256.Size]byte]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), maxTokenFile)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"TOKEN ROLE\"", line)
		}
		tok, role := fields[0], fields[1]
		if len(tok) < minTokenLen {
			return nil, fmt.Errorf("line %d: token shorter than %d bytes", line, minTokenLen)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] < 0x21 || tok[i] > 0x7e {
				return nil, fmt.Errorf("line %d: token holds a byte that is not printable ASCII", line)
			}
		}
		var r Role
		switch role {
		case "read":
			r = RoleRead
		case "write":
			r = RoleWrite
		default:
			return nil, fmt.Errorf("line %d: role %q: want read or write", line, role)
		}
		h := sha256.Sum256([]byte(tok))
		if seen[h] {
			return nil, fmt.Errorf("line %d: token given twice", line)
		}
		seen[h] = true
		ts.hashes, ts.roles = append(ts.hashes, h), append(ts.roles, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	if len(ts.hashes) == 0 {
		return nil, errors.New("token file holds no token")
	}
	return ts, nil
}

// role returns the role of tok, RoleNone if unknown. It looks at every
// entry whatever it finds.
func (ts *tokenSet) role(tok string) Role {
	if ts == nil || tok == "" {
		return RoleNone
	}
	h := sha256.Sum256([]byte(tok))
	found := RoleNone
	for i := range ts.hashes {
		eq := subtle.ConstantTimeCompare(h[:], ts.hashes[i][:])
		found = Role(subtle.ConstantTimeSelect(eq, int(ts.roles[i]), int(found)))
	}
	return found
}

func readTokenFile(path string) (*tokenSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return nil, err
	}
	return parseTokenFile(b)
}

// adminGate is the middleware. tokens is nil without a token file; it is
// swapped whole on reload, so a request sees the old set or the new one.
type adminGate struct {
	tokens  atomic.Pointer[tokenSet]
	path    string
	authAll bool
	origins map[string]bool
	hosts   map[string]bool
	log     zerolog.Logger
	denyLog logEvery // one warning a second, with the count of the rest
	refused *prometheus.CounterVec
}

func newAdminGate(cfg Config, log zerolog.Logger) (*adminGate, error) {
	g := &adminGate{path: cfg.AdminTokenFile, authAll: cfg.AdminAuthAll, origins: map[string]bool{}, hosts: map[string]bool{},
		log: log.With().Str("component", "admin").Logger()}
	for _, o := range cfg.AdminAllowedOrigins {
		g.origins[strings.ToLower(strings.TrimRight(o, "/"))] = true
	}
	for _, h := range cfg.AdminHosts {
		g.hosts[strings.ToLower(strings.TrimSuffix(h, "."))] = true
	}
	if g.path != "" {
		ts, err := readTokenFile(g.path)
		if err != nil {
			return nil, fmt.Errorf("admin token file %s: %w", g.path, err)
		}
		g.tokens.Store(ts)
		g.checkMode()
	}
	return g, nil
}

// checkMode warns of a token file others may read: its tokens can change
// the mesh.
func (g *adminGate) checkMode() {
	if st, err := os.Stat(g.path); err == nil && st.Mode().Perm()&0o077 != 0 {
		g.log.Warn().Str("file", g.path).Str("mode", st.Mode().Perm().String()).
			Msg("admin token file is readable by others; chmod 600 it")
	}
}

// reload reads the token file again; on error the tokens in force stay.
func (g *adminGate) reload() error {
	if g.path == "" {
		return nil
	}
	ts, err := readTokenFile(g.path)
	if err != nil {
		return fmt.Errorf("admin token file %s: %w", g.path, err)
	}
	g.tokens.Store(ts)
	g.checkMode()
	return nil
}

// openPaths need no token unless AdminAuthAll: probes and scrapes.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// openFile reports the dashboard's own files (its page, script and style):
// they hold no data, and a browser must load them before the operator can
// type a token the page then sends with every call (/ui/api/* is not open).
func openFile(path string) bool {
	return path == "/ui" || (strings.HasPrefix(path, "/ui/") && !strings.HasPrefix(path, "/ui/api/"))
}

// writeOnly reports the paths that want a write token even to read.
func writeOnly(path string) bool {
	return path == "/v1/keys" || strings.HasPrefix(path, "/v1/keys/") || strings.HasPrefix(path, "/debug/pprof")
}

func isChange(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

func (g *adminGate) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host) {
			g.deny(w, r, http.StatusForbidden, "host", "host "+quoteShort(r.Host)+" is not this admin API's (see --admin-hosts)")
			return
		}
		change := isChange(r.Method)
		if o := r.Header.Get("Origin"); o != "" && !g.originAllowed(o, r.Host) {
			g.deny(w, r, http.StatusForbidden, "origin", "origin "+quoteShort(o)+" may not use this admin API (see --admin-allowed-origins)")
			return
		}
		if change {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				g.deny(w, r, http.StatusUnsupportedMediaType, "content_type", "changes must be sent with Content-Type: application/json")
				return
			}
		}
		ts := g.tokens.Load()
		if ts == nil || (openPaths[r.URL.Path] && !change && !g.authAll) || (openFile(r.URL.Path) && !change) {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := bearer(r.Header.Get("Authorization"))
		role := RoleNone
		if ok {
			role = ts.role(tok)
		}
		switch {
		case role == RoleNone:
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshlb admin"`)
			reason := "no_token"
			if ok {
				reason = "unknown_token"
			}
			g.deny(w, r, http.StatusUnauthorized, reason, "a valid bearer token is required (Authorization: Bearer TOKEN)")
			return
		case role == RoleRead && (change || writeOnly(r.URL.Path)):
			g.deny(w, r, http.StatusForbidden, "read_role", "this token may only read; this needs a write token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer extracts the token of "Bearer TOKEN" (the scheme in any case,
// RFC 9110 11.1).
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// originAllowed: a listed origin, or our own (a page the admin API
// serves itself, such as a dashboard, calling it back). Browsers send
// Origin on every cross-origin request and on same-origin changes.
func (g *adminGate) originAllowed(origin, host string) bool {
	o := strings.ToLower(strings.TrimRight(origin, "/"))
	if g.origins[o] {
		return true
	}
	_, rest, ok := strings.Cut(o, "://")
	return ok && host != "" && rest == strings.ToLower(host)
}

// hostAllowed applies the Host rule; host may carry a port.
func (g *adminGate) hostAllowed(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
	if h == "" {
		// HTTP/1.0 without Host: old health checkers (HAProxy's httpchk
		// default). Browsers always send one, so rebinding can't use this.
		return true
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return h == "localhost" || g.hosts[h]
}

// deny answers with a JSON error and logs, at most once a second, the
// refusal: never the token, nor a header value past a short prefix.
func (g *adminGate) deny(w http.ResponseWriter, r *http.Request, status int, reason, msg string) {
	if g.refused != nil {
		g.refused.WithLabelValues(reason).Inc()
	}
	if ok, suppressed := g.denyLog.allow(time.Now()); ok {
		g.log.Warn().Int("status", status).Str("reason", reason).Str("method", r.Method).
			Str("path", quoteShort(r.URL.Path)).Str("remote_addr", r.RemoteAddr).
			Int64("suppressed", suppressed).Msg("admin request refused")
	}
	writeError(w, status, msg)
}

// quoteShort bounds a client-chosen string before it is echoed or logged.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return fmt.Sprintf("%q", s)
}

// logEvery lets one event a second through and counts the rest.
type logEvery struct {
	next       atomic.Int64
	suppressed atomic.Int64
}

func (l *logEvery) allow(now time.Time) (bool, int64) {
	n := l.next.Load()
	if now.UnixNano() < n || !l.next.CompareAndSwap(n, now.UnixNano()+int64(time.Second)) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}

// ReloadAdminTokens reads the admin token file again (on SIGHUP); on error
// the tokens in force stay and the error says why.
func (n *Node) ReloadAdminTokens() error {
	if err := n.sec.gate.reload(); err != nil {
		return err
	}
	if n.cfg.AdminTokenFile != "" {
		n.log.Info().Str("file", n.cfg.AdminTokenFile).Msg("admin tokens reloaded")
	}
	return nil
}

// IsLoopbackHostPort reports whether addr's host is a loopback address or
// localhost: the only admin addresses that need no token file.
func IsLoopbackHostPort(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// ErrAdminExposed is the refusal to serve the admin API beyond loopback
// with no token file.
var ErrAdminExposed = errors.New("the admin API can change every node of the mesh: serving it beyond loopback needs a token file (or the explicit choice to go without)")

func (s Security) validate(adminAddr string, gossipKey bool) []error {
	var errs []error
	if s.AdminTokenFile == "" && !s.AdminInsecure && !IsLoopbackHostPort(adminAddr) {
		errs = append(errs, fmt.Errorf("admin address %s: %w", adminAddr, ErrAdminExposed))
	}
	if _, err := os.Stat(s.KeyringFile); s.KeyringFile != "" && errors.Is(err, os.ErrNotExist) && !gossipKey {
		errs = append(errs, errors.New("keyring file: it does not exist yet, and there is no gossip key to start it from"))
	}
	if (s.AdminTLSCert == "") != (s.AdminTLSKey == "") {
		errs = append(errs, errors.New("admin tls: give both a certificate and a key"))
	}
	if s.AdminClientCA != "" && s.AdminTLSCert == "" {
		errs = append(errs, errors.New("admin tls: a client CA needs a certificate and a key"))
	}
	return errs
}
