package router

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// DefaultKeySources is the default of --route-key.
const DefaultKeySources = "query:session_id,cookie:sid,header:X-Session-ID,ip"

// MaxKeyLen is the longest routing key we accept. A longer value is treated
// as absent, so a client cannot make every node hash megabytes per request.
const MaxKeyLen = 512

// defaultIPv6Prefix keeps a client that rotates privacy addresses inside
// its /64 (RFC 8981, common on mobile networks) on one key.
const defaultIPv6Prefix = 64

// KeyConfig configures routing-key extraction.
type KeyConfig struct {
	// Sources is the ordered, comma-separated list of places to look for
	// the key: query:NAME, cookie:NAME, header:NAME, protocol:PREFIX and
	// ip. The first source that yields a value wins. Empty means
	// DefaultKeySources.
	Sources string
	// TrustedProxies are the peers whose X-Forwarded-For and Forwarded
	// headers (and PROXY protocol headers) are believed. Empty means none.
	TrustedProxies []netip.Prefix
	// IPv6Prefix is the prefix length IPv6 clients are hashed on, 1..128;
	// 128 uses the whole address. Zero means 64.
	IPv6Prefix int
	// SessionCookie, if set and Sources has no cookie source of that name,
	// adds one just before "ip" (or at the end), so the cookie a node
	// issues is honoured whatever --route-key says.
	SessionCookie string
}

// sourceKind is the place a key source looks in.
type sourceKind uint8

const (
	kindQuery sourceKind = iota + 1
	kindCookie
	kindHeader
	kindProtocol
	kindIP
)

func (k sourceKind) String() string {
	switch k {
	case kindQuery:
		return "query"
	case kindCookie:
		return "cookie"
	case kindHeader:
		return "header"
	case kindProtocol:
		return "protocol"
	case kindIP:
		return "ip"
	}
	return "unknown"
}

// keySource is one parsed entry of KeyConfig.Sources.
type keySource struct {
	kind sourceKind
	name string // query or cookie name, canonical header name, protocol prefix
	spec string // normalized "kind:name" or "ip", returned by Key
}

// KeyExtractor finds the routing key of a request. It is immutable after
// NewKeyExtractor and safe for concurrent use.
//
// The key is the bare value, whatever source gave it: the same value in a
// query parameter and in a cookie routes to the same node. That is what
// lets a cookie issued by a node match a query parameter a client sends
// on a later connection.
type KeyExtractor struct {
	sources    []keySource
	specs      []string
	trusted    []netip.Prefix
	ipv6Prefix int
}

// NewKeyExtractor validates cfg and builds an extractor. It rejects an
// unknown source kind, a missing or invalid name, a duplicate source, an
// invalid trusted prefix and an IPv6Prefix outside 1..128, naming the
// offending entry.
func NewKeyExtractor(cfg KeyConfig) (*KeyExtractor, error) {
	spec := cfg.Sources
	if strings.TrimSpace(spec) == "" {
		spec = DefaultKeySources
	}
	sources, err := parseSources(spec)
	if err != nil {
		return nil, err
	}
	if cfg.SessionCookie != "" {
		if !isToken(cfg.SessionCookie) {
			return nil, fmt.Errorf("session cookie %q: invalid cookie name", cfg.SessionCookie)
		}
		sources = insertSessionCookie(sources, cfg.SessionCookie)
	}

	bits := cfg.IPv6Prefix
	if bits == 0 {
		bits = defaultIPv6Prefix
	}
	if bits < 1 || bits > 128 {
		return nil, fmt.Errorf("ipv6 prefix length %d: want 1..128", cfg.IPv6Prefix)
	}

	trusted := make([]netip.Prefix, 0, len(cfg.TrustedProxies))
	for _, p := range cfg.TrustedProxies {
		if !p.IsValid() {
			return nil, fmt.Errorf("trusted proxy %v: invalid prefix", p)
		}
		trusted = append(trusted, normalizePrefix(p))
	}

	e := &KeyExtractor{
		sources:    sources,
		specs:      make([]string, len(sources)),
		trusted:    trusted,
		ipv6Prefix: bits,
	}
	for i, s := range sources {
		e.specs[i] = s.spec
	}
	return e, nil
}

// parseSources parses a comma-separated source list. Empty entries are
// skipped so that a trailing comma in a flag is harmless.
func parseSources(spec string) ([]keySource, error) {
	var sources []keySource
	for entry := range strings.SplitSeq(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		s, err := parseSource(entry)
		if err != nil {
			return nil, fmt.Errorf("key source %q: %w", entry, err)
		}
		if slices.ContainsFunc(sources, func(o keySource) bool { return o.spec == s.spec }) {
			return nil, fmt.Errorf("key source %q: duplicate", entry)
		}
		sources = append(sources, s)
	}
	if len(sources) == 0 {
		return nil, errors.New("key sources: none given")
	}
	return sources, nil
}

func parseSource(entry string) (keySource, error) {
	kindStr, name, hasName := strings.Cut(entry, ":")
	kindStr = strings.ToLower(strings.TrimSpace(kindStr))
	name = strings.TrimSpace(name)
	var s keySource
	switch kindStr {
	case "query":
		s.kind = kindQuery
	case "cookie":
		s.kind = kindCookie
	case "header":
		s.kind = kindHeader
	case "protocol":
		s.kind = kindProtocol
	case "ip":
		if hasName {
			return s, errors.New("ip takes no name")
		}
		return keySource{kind: kindIP, spec: "ip"}, nil
	default:
		return s, fmt.Errorf("unknown kind %q", kindStr)
	}
	if name == "" {
		return s, fmt.Errorf("%v needs a name", s.kind)
	}
	switch s.kind {
	case kindCookie, kindHeader, kindProtocol:
		// These names travel in headers, where anything but a token
		// could never match.
		if !isToken(name) {
			return s, fmt.Errorf("%v name %q is not a token", s.kind, name)
		}
	}
	if s.kind == kindHeader {
		// Header names are case-insensitive; canonical form makes
		// header:x-session-id and header:X-Session-ID the same source on
		// every node's fingerprint, and lets Key index the map directly.
		name = textproto.CanonicalMIMEHeaderKey(name)
	}
	s.name = name
	s.spec = s.kind.String() + ":" + name
	return s, nil
}

// insertSessionCookie adds cookie:name before "ip" (or at the end) unless
// a cookie source of that name exists.
func insertSessionCookie(sources []keySource, name string) []keySource {
	for _, s := range sources {
		if s.kind == kindCookie && s.name == name {
			return sources
		}
	}
	c := keySource{kind: kindCookie, name: name, spec: "cookie:" + name}
	i := slices.IndexFunc(sources, func(s keySource) bool { return s.kind == kindIP })
	if i < 0 {
		i = len(sources)
	}
	return slices.Insert(sources, i, c)
}

// isToken reports whether s is an RFC 9110 token, the grammar of header
// names, cookie names and WebSocket subprotocols.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// normalizePrefix masks p and turns an IPv4-mapped IPv6 prefix into the
// IPv4 one, since addresses are unmapped before they are compared.
func normalizePrefix(p netip.Prefix) netip.Prefix {
	a := p.Addr().WithZone("")
	if a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return netip.PrefixFrom(a, p.Bits()).Masked()
}

// ParseTrustedProxies parses a comma-separated list of CIDR prefixes and
// bare addresses ("10.0.0.0/8, 192.168.1.7, ::1"); a bare address is a
// /32 or /128. Empty entries are skipped. An error names the bad entry.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for entry := range strings.SplitSeq(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(entry, "/") {
			var err error
			if p, err = netip.ParsePrefix(entry); err != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", entry, err)
			}
		} else {
			a, err := netip.ParseAddr(entry)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", entry, err)
			}
			if a.Zone() != "" {
				return nil, fmt.Errorf("trusted proxy %q: zones are not supported", entry)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, normalizePrefix(p))
	}
	return out, nil
}

// Sources returns the normalized source list, including an inserted
// session cookie. Every node of a mesh must use the same list, so it is
// part of the config fingerprint.
func (e *KeyExtractor) Sources() []string {
	return slices.Clone(e.specs)
}

// IsTrusted reports whether addr is inside TrustedProxies. An IPv4-mapped
// IPv6 address is compared as IPv4.
func (e *KeyExtractor) IsTrusted(addr netip.Addr) bool {
	return isTrusted(e.trusted, addr)
}

func isTrusted(trusted []netip.Prefix, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Key returns the routing key of r and the source that gave it (its
// normalized spec, e.g. "query:session_id" or "ip"). ok is false when no
// source matched, which needs a source list without "ip" or a request
// whose client address is unknown. Values that are empty or longer than
// MaxKeyLen count as absent.
func (e *KeyExtractor) Key(r *http.Request) (key string, source string, ok bool) {
	for i := range e.sources {
		s := &e.sources[i]
		var v string
		switch s.kind {
		case kindQuery:
			if r.URL != nil {
				v = queryValue(r.URL.RawQuery, s.name)
			}
		case kindCookie:
			if c, err := r.Cookie(s.name); err == nil {
				v = c.Value
			}
		case kindHeader:
			if vs := r.Header[s.name]; len(vs) > 0 {
				v = strings.TrimSpace(vs[0])
			}
		case kindProtocol:
			v = protocolValue(r.Header["Sec-Websocket-Protocol"], s.name)
		case kindIP:
			v = e.ipKey(r)
		}
		if v != "" && len(v) <= MaxKeyLen {
			return v, s.spec, true
		}
	}
	return "", "", false
}

// ipKey is the client address as a key: IPv6 masked to the configured
// prefix, IPv4 as is, "" when unknown.
func (e *KeyExtractor) ipKey(r *http.Request) string {
	a := e.ClientIP(r)
	if !a.IsValid() {
		return ""
	}
	if a.Is6() && e.ipv6Prefix < 128 {
		p, err := a.Prefix(e.ipv6Prefix)
		if err != nil {
			return ""
		}
		a = p.Addr()
	}
	return a.String()
}

// queryValue returns the first value of name in a raw query, with the same
// rules as url.ParseQuery (pairs that fail to unescape or hold a semicolon
// are skipped) but without building the whole map.
func queryValue(raw, name string) string {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(k, "%+") {
			var err error
			if k, err = url.QueryUnescape(k); err != nil {
				continue
			}
		}
		if k != name {
			continue
		}
		if strings.ContainsAny(v, "%+") {
			var err error
			if v, err = url.QueryUnescape(v); err != nil {
				continue
			}
		}
		return v
	}
	return ""
}

// protocolValue finds the first subprotocol token, across all header
// lines, that starts with prefix and returns the rest of it. The first
// such token decides: if its rest is empty the source is absent.
func protocolValue(lines []string, prefix string) string {
	for _, line := range lines {
		for line != "" {
			var tok string
			tok, line, _ = strings.Cut(line, ",")
			tok = strings.Trim(tok, " \t")
			if rest, ok := strings.CutPrefix(tok, prefix); ok {
				return rest
			}
		}
	}
	return ""
}

// ClientIP returns the client address of r. It is the peer (r.RemoteAddr)
// unless the peer is a trusted proxy; then it is the right-most address in
// X-Forwarded-For (or, without that header, in Forwarded's for=) that is
// not itself trusted, or the left-most if all are. A malformed element met
// on that walk makes the forwarding headers untrustworthy, so the peer is
// used. IPv4-mapped IPv6 addresses are unmapped and zones dropped. The
// result is invalid when r.RemoteAddr cannot be parsed.
func (e *KeyExtractor) ClientIP(r *http.Request) netip.Addr {
	peer := parseHostAddr(r.RemoteAddr)
	if !peer.IsValid() || !isTrusted(e.trusted, peer) {
		return peer
	}
	if xff := r.Header["X-Forwarded-For"]; len(xff) > 0 {
		if a, ok := walkXFF(e.trusted, xff); ok {
			return a
		}
		return peer
	}
	if fwd := r.Header["Forwarded"]; len(fwd) > 0 {
		if a, ok := walkForwarded(e.trusted, fwd); ok {
			return a
		}
	}
	return peer
}

// walkXFF walks X-Forwarded-For from the right. Later header lines are to
// the right of earlier ones, as if joined with commas.
func walkXFF(trusted []netip.Prefix, lines []string) (netip.Addr, bool) {
	var last netip.Addr
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		for {
			var elem string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				elem, line = line[j+1:], line[:j]
			} else {
				elem, line = line, ""
			}
			a := parseHostAddr(strings.TrimSpace(elem))
			if !a.IsValid() {
				return netip.Addr{}, false
			}
			if !isTrusted(trusted, a) {
				return a, true
			}
			last = a
			if line == "" {
				break
			}
		}
	}
	return last, last.IsValid()
}

// walkForwarded walks the for= parameters of RFC 7239 Forwarded from the
// right. An element without for=, or with an obfuscated or "unknown" node,
// is malformed for our purpose: we cannot tell who sent it.
func walkForwarded(trusted []netip.Prefix, lines []string) (netip.Addr, bool) {
	var last netip.Addr
	for i := len(lines) - 1; i >= 0; i-- {
		elems, ok := splitQuoted(lines[i], ',')
		if !ok {
			return netip.Addr{}, false
		}
		for j := len(elems) - 1; j >= 0; j-- {
			a := forwardedFor(elems[j])
			if !a.IsValid() {
				return netip.Addr{}, false
			}
			if !isTrusted(trusted, a) {
				return a, true
			}
			last = a
		}
	}
	return last, last.IsValid()
}

// splitQuoted splits s on sep outside double-quoted strings. ok is false
// on an unterminated quote.
func splitQuoted(s string, sep byte) (parts []string, ok bool) {
	start, inQuote := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if inQuote {
		return nil, false
	}
	return append(parts, s[start:]), true
}

// forwardedFor returns the address in the for= parameter of one Forwarded
// element, or an invalid Addr.
func forwardedFor(elem string) netip.Addr {
	pairs, ok := splitQuoted(elem, ';')
	if !ok {
		return netip.Addr{}
	}
	for _, pair := range pairs {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "for") {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
			if strings.IndexByte(v, '\\') >= 0 {
				return netip.Addr{}
			}
		}
		return parseHostAddr(v)
	}
	return netip.Addr{}
}

// parseHostAddr parses "1.2.3.4", "1.2.3.4:80", "::1", "[::1]" or
// "[::1]:80" (the forms RemoteAddr, X-Forwarded-For and Forwarded use),
// unmapping IPv4-mapped addresses and dropping zones. It returns an
// invalid Addr on anything else.
func parseHostAddr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	var a netip.Addr
	var err error
	switch {
	case s[0] == '[':
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}
		}
		if rest := s[end+1:]; rest != "" && !validPort(rest) {
			return netip.Addr{}
		}
		a, err = netip.ParseAddr(s[1:end])
		if err == nil && !a.Is6() {
			return netip.Addr{}
		}
	case strings.Count(s, ":") == 1:
		var ap netip.AddrPort
		ap, err = netip.ParseAddrPort(s)
		a = ap.Addr()
	default:
		a, err = netip.ParseAddr(s)
	}
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// validPort reports whether s is ":" followed by a decimal port.
func validPort(s string) bool {
	if len(s) < 2 || s[0] != ':' {
		return false
	}
	_, err := strconv.ParseUint(s[1:], 10, 16)
	return err == nil
}
