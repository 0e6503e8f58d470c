package meshdns

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"
)

// Server answers DNS for the mesh's names. Build it with New, feed it the
// mesh with Update, run it with Start and stop it with Shutdown.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	m       *metrics
	limiter *limiter
	zones   []string      // canonical, longest first
	glue    map[string]NS // in-zone name server names → their glue
	current atomic.Pointer[answer]

	mu       sync.Mutex // guards Update's state below
	lastGood *answer
	lastPeer time.Time

	udp, tcp *dns.Server
	done     chan struct{} // closed by Shutdown
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// New validates cfg. It opens no socket and starts no goroutine.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("dns metrics: %w", err)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("component", "dns").Logger(),
		m:       m,
		limiter: newLimiter(cfg.RateLimit, cfg.RateBurst, cfg.now),
		zones:   append([]string(nil), cfg.Names...),
		glue:    make(map[string]NS),
		done:    make(chan struct{}),
	}
	// Longest first, so a zone inside another answers for its own names.
	slices.SortStableFunc(s.zones, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	for _, ns := range cfg.NS {
		if s.zoneOf(ns.Name) != "" {
			if !ns.Addr.IsValid() {
				return nil, fmt.Errorf("dns name server %s is inside a zone answered here: give its address (name=ip) as glue", ns.Name)
			}
			s.glue[ns.Name] = ns
		}
	}
	s.current.Store(&answer{ttl: uint32(MinTTL / time.Second), stale: true, reason: "not started", updated: cfg.now()})
	return s, nil
}

// Update replaces the answer set with one computed from members, the
// mesh as this node sees it. Call it on every membership or meta change.
// It does not block on queries.
func (s *Server) Update(members []Member) {
	now := s.cfg.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range members {
		if !m.Self {
			s.lastPeer = now
			break
		}
	}
	prev := s.current.Load()
	a := choose(members, s.lastGood, now, s.lastPeer, s.cfg.TTL)
	if a.good {
		s.lastGood = a
	}
	s.current.Store(a)
	s.m.answerNodes.Set(float64(len(a.nodes)))
	s.m.stale.Set(b2f(a.stale))
	switch {
	case a.stale && !prev.stale:
		s.log.Warn().Strs("answer", a.nodes).Str("reason", a.reason).Msg("dns answers a stale set")
	case !a.stale && prev.stale && prev.reason != "not started":
		s.log.Info().Strs("answer", a.nodes).Msg("dns answers live nodes again")
	}
	if !slices.Equal(a.nodes, prev.nodes) {
		s.log.Info().Strs("answer", a.nodes).Bool("stale", a.stale).Msg("dns answer set changed")
	}
}

// Status is the answer set in use, for /v1/status.
type Status struct {
	Addr    string    `json:"addr"`
	Names   []string  `json:"names"`
	Answer  []string  `json:"answer"` // addresses, IPv4 then IPv6
	Nodes   []string  `json:"nodes"`
	TTL     int       `json:"ttl_seconds"`
	Stale   bool      `json:"stale"`
	Reason  string    `json:"reason,omitempty"`
	Updated time.Time `json:"updated"`
}

// Status reports the answer set in use.
func (s *Server) Status() Status {
	a := s.current.Load()
	st := Status{Addr: s.Addr(), Names: s.cfg.Names, Nodes: a.nodes, TTL: int(a.ttl), Stale: a.stale, Reason: a.reason, Updated: a.updated.UTC()}
	st.Answer = []string{}
	for _, ip := range append(append([]netip.Addr(nil), a.v4...), a.v6...) {
		st.Answer = append(st.Answer, ip.String())
	}
	return st
}

// Start binds UDP and TCP on Config.Addr (failing with the address named
// when it is taken) and serves both.
func (s *Server) Start() error {
	pc, ln, err := listenBoth(s.cfg.Addr)
	if err != nil {
		return err
	}
	h := dns.HandlerFunc(s.serveDNS)
	s.udp = &dns.Server{PacketConn: pc, Handler: h, UDPSize: MaxQuery + 1,
		MsgAcceptFunc: s.accept, MsgInvalidFunc: s.invalid, DecorateReader: s.boundedReader}
	s.tcp = &dns.Server{Listener: limitListener(ln, s.cfg.MaxTCPConns), Handler: h,
		MsgAcceptFunc: s.accept, MsgInvalidFunc: s.invalid, DecorateReader: s.boundedReader,
		// A client gets 2 s for its first query and 8 s between the next
		// ones, and 16 queries per connection: TCP is the fallback of a
		// truncated answer, not a session.
		ReadTimeout: 2 * time.Second, IdleTimeout: func() time.Duration { return 8 * time.Second }, MaxTCPQueries: 16,
		WriteTimeout: 2 * time.Second}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Go(func() {
			if err := srv.ActivateAndServe(); err != nil && !s.stopping() {
				s.log.Error().Err(err).Msg("dns listener stopped")
			}
		})
		<-started
	}
	s.log.Info().Str("addr", s.Addr()).Strs("names", s.cfg.Names).Dur("ttl", s.cfg.TTL).Msg("dns serving")
	return nil
}

// listenBoth binds UDP and TCP on one port. For port 0 the TCP port
// follows the UDP one, and a port free for UDP but taken for TCP is tried
// again with another.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, listenErr("udp", addr, err)
		}
		taddr := net.JoinHostPort(hostOf(addr), portOf(pc.LocalAddr().String()))
		ln, err := net.Listen("tcp", taddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if portOf(addr) != "0" || attempt == 9 {
			return nil, nil, listenErr("tcp", taddr, err)
		}
	}
}

func listenErr(network, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("dns %s address %s is already in use", network, addr)
	}
	return fmt.Errorf("dns listen %s on %s: %w", network, addr, err)
}

func hostOf(hp string) string { h, _, _ := net.SplitHostPort(hp); return h }
func portOf(hp string) string { _, p, _ := net.SplitHostPort(hp); return p }

// Addr is the bound UDP (and TCP) address, once started.
func (s *Server) Addr() string {
	if s.udp == nil || s.udp.PacketConn == nil {
		return s.cfg.Addr
	}
	return s.udp.PacketConn.LocalAddr().String()
}

func (s *Server) stopping() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Shutdown stops serving and waits for the listeners' goroutines. It is
// safe to call more than once, and without Start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		close(s.done)
		var errs []error
		for _, srv := range []*dns.Server{s.udp, s.tcp} {
			if srv != nil {
				if err := srv.ShutdownContext(ctx); err != nil {
					errs = append(errs, err)
				}
			}
		}
		s.wg.Wait()
		if err := errors.Join(errs...); err != nil {
			s.stopErr = fmt.Errorf("dns shutdown: %w", err)
		}
	})
	return s.stopErr
}

// serveDNS answers one query.
func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	udp := w.LocalAddr().Network() == "udp"
	if udp {
		switch s.limiter.check(remoteIP(w.RemoteAddr())) {
		case drop:
			s.m.dropped.WithLabelValues("ratelimit").Inc()
			return
		case slip:
			s.m.dropped.WithLabelValues("ratelimit_slip").Inc()
			resp := new(dns.Msg)
			resp.SetReply(req)
			resp.Truncated = true
			_ = w.WriteMsg(resp)
			return
		}
	}
	resp := s.respond(req, udp, randIntN)
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug().Err(err).Str("remote_addr", w.RemoteAddr().String()).Msg("dns write failed")
	}
	qtype := "none"
	if len(req.Question) == 1 {
		qtype = typeLabel(req.Question[0].Qtype)
	}
	s.m.queries.WithLabelValues(qtype, rcodeLabel(resp.Rcode)).Inc()
}

func remoteIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr()
}

// accept drops, without an answer, anything but a plain query with one
// question: a reply to a forged packet could be aimed at a victim.
func (s *Server) accept(h dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	opcode := int(h.Bits>>11) & 0xF
	if h.Bits&qr != 0 || opcode != dns.OpcodeQuery || h.Qdcount != 1 || h.Ancount != 0 || h.Nscount != 0 || h.Arcount > 1 {
		s.m.dropped.WithLabelValues("garbage").Inc()
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}

// invalid counts packets that do not parse. miekg/dns answers those that
// pass accept but fail to unpack with a FORMERR no larger than the query.
func (s *Server) invalid(_ []byte, _ error) { s.m.dropped.WithLabelValues("garbage").Inc() }

// boundedReader drops queries longer than MaxQuery: over UDP it reads the
// next packet instead, over TCP it ends the connection.
func (s *Server) boundedReader(r dns.Reader) dns.Reader { return boundedReader{r, s} }

type boundedReader struct {
	dns.Reader
	s *Server
}

func (b boundedReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	m, err := b.Reader.ReadTCP(conn, timeout)
	if err == nil && len(m) > MaxQuery {
		b.s.m.dropped.WithLabelValues("oversized").Inc()
		return nil, errors.New("query too long")
	}
	return m, err
}

func (b boundedReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, sess, err := b.Reader.ReadUDP(conn, timeout)
		// The buffer holds MaxQuery+1 bytes: a full one was cut short.
		if err != nil || len(m) <= MaxQuery {
			return m, sess, err
		}
		b.s.m.dropped.WithLabelValues("oversized").Inc()
	}
}

// respond builds the answer to req, sized for its transport and EDNS0
// buffer. intn picks the random subset; tests pass a fixed one.
func (s *Server) respond(req *dns.Msg, udp bool, intn func(int) int) *dns.Msg {
	resp := new(dns.Msg)
	resp.SetReply(req)
	size := dns.MinMsgSize
	if !udp {
		size = dns.MaxMsgSize
	}
	opt := req.IsEdns0()
	switch {
	case len(req.Question) != 1:
		resp.Rcode = dns.RcodeFormatError
	case opt != nil && opt.Version() != 0:
		resp.SetEdns0(maxUDPAnswer, false)
		resp.SetRcode(req, dns.RcodeBadVers)
		return resp
	default:
		s.answerQuestion(resp, req.Question[0], intn)
	}
	if opt != nil {
		if udp {
			size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPAnswer)
		}
		resp.SetEdns0(maxUDPAnswer, false)
	}
	// Truncate keeps the OPT record and sets TC when it drops any record;
	// the client then asks over TCP and gets the same answer whole.
	resp.Truncate(size)
	return resp
}

func (s *Server) answerQuestion(resp *dns.Msg, q dns.Question, intn func(int) int) {
	name := strings.ToLower(q.Name)
	zone := s.zoneOf(name)
	if zone == "" || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) {
		resp.Rcode = dns.RcodeRefused
		return
	}
	resp.Authoritative = true
	a := s.current.Load()
	switch ns, isNS := s.glue[name]; {
	case name == zone:
		s.apex(resp, q, zone, a, intn)
	case isNS:
		if ns.Addr.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) ||
			ns.Addr.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) {
			resp.Answer = append(resp.Answer, addrRR(q.Name, ns.Addr, uint32(s.cfg.TTL/time.Second)))
		} else {
			resp.Ns = append(resp.Ns, s.soa(zone, a))
		}
	default:
		resp.Rcode = dns.RcodeNameError
		resp.Ns = append(resp.Ns, s.soa(zone, a))
	}
}

// apex answers a question about the zone's own name.
func (s *Server) apex(resp *dns.Msg, q dns.Question, zone string, a *answer, intn func(int) int) {
	switch q.Qtype {
	case dns.TypeA:
		resp.Answer = s.addrs(q.Name, a.v4, a.ttl, intn)
	case dns.TypeAAAA:
		resp.Answer = s.addrs(q.Name, a.v6, a.ttl, intn)
	case dns.TypeANY:
		// RFC 8482 lets an ANY answer be a subset; the addresses are what
		// a client wants.
		resp.Answer = append(s.addrs(q.Name, a.v4, a.ttl, intn), s.addrs(q.Name, a.v6, a.ttl, intn)...)
	case dns.TypeSOA:
		resp.Answer = []dns.RR{s.soa(zone, a)}
	case dns.TypeNS:
		resp.Answer, resp.Extra = s.nsRRs(zone, a, intn)
	}
	if len(resp.Answer) == 0 {
		if a.empty() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY) {
			// Nothing at all to answer (no node has ever been known): a
			// server failure, which a resolver retries elsewhere and does
			// not cache, rather than NODATA, which it would.
			resp.Rcode = dns.RcodeServerFailure
			return
		}
		resp.Ns = append(resp.Ns, s.soa(zone, a))
	}
}

// addrs is a random subset of at most MaxAnswers of ips, in random order,
// so that load spreads even over clients that take the first address.
func (s *Server) addrs(name string, ips []netip.Addr, ttl uint32, intn func(int) int) []dns.RR {
	ips = append([]netip.Addr(nil), ips...)
	for i := len(ips) - 1; i > 0; i-- { // Fisher–Yates
		j := intn(i + 1)
		ips[i], ips[j] = ips[j], ips[i]
	}
	ips = ips[:min(len(ips), s.cfg.MaxAnswers)]
	rrs := make([]dns.RR, 0, len(ips))
	for _, ip := range ips {
		rrs = append(rrs, addrRR(name, ip, ttl))
	}
	return rrs
}

func addrRR(name string, ip netip.Addr, ttl uint32) dns.RR {
	switch {
	case ip.Is4():
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: ip.AsSlice()}
	case ip.Is6():
		return &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: ip.AsSlice()}
	}
	return nil
}

// nsRRs are the zone's NS records and their glue: the configured name
// servers, or else the zone's own name, whose addresses are the nodes.
func (s *Server) nsRRs(zone string, a *answer, intn func(int) int) (ns, glue []dns.RR) {
	ttl := uint32(s.cfg.TTL / time.Second)
	if len(s.cfg.NS) == 0 {
		ns = []dns.RR{&dns.NS{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: ttl}, Ns: zone}}
		glue = append(s.addrs(zone, a.v4, a.ttl, intn), s.addrs(zone, a.v6, a.ttl, intn)...)
		return ns, glue
	}
	for _, n := range s.cfg.NS {
		ns = append(ns, &dns.NS{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: ttl}, Ns: n.Name})
		if g, ok := s.glue[n.Name]; ok {
			glue = append(glue, addrRR(n.Name, g.Addr, ttl))
		}
	}
	return ns, glue
}

// soa is the zone's SOA. Its minimum (the negative-caching TTL) is the
// answer TTL: a name that appears is seen as soon as an address would be.
func (s *Server) soa(zone string, a *answer) dns.RR {
	mname := zone
	if len(s.cfg.NS) > 0 {
		mname = s.cfg.NS[0].Name
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: a.ttl},
		Ns:      mname,
		Mbox:    "hostmaster." + zone,
		Serial:  1, // no zone transfers: every node builds the zone from gossip
		Refresh: 3600, Retry: 600, Expire: 86400,
		Minttl: a.ttl,
	}
}

// zoneOf is the zone name is in, or "".
func (s *Server) zoneOf(name string) string {
	for _, z := range s.zones {
		if dns.IsSubDomain(z, name) {
			return z
		}
	}
	return ""
}

func typeLabel(t uint16) string {
	switch t {
	case dns.TypeA, dns.TypeAAAA, dns.TypeSOA, dns.TypeNS, dns.TypeANY, dns.TypeSRV, dns.TypeTXT, dns.TypeMX, dns.TypeCNAME, dns.TypePTR, dns.TypeHTTPS:
		return dns.TypeToString[t]
	}
	return "other"
}

func rcodeLabel(r int) string {
	if s, ok := dns.RcodeToString[r]; ok {
		return s
	}
	return "other"
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func randIntN(n int) int { return rand.IntN(n) }
