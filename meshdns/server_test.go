package meshdns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

func newTestServer(t *testing.T, tweak func(*Config)) *Server {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", Names: []string{"ws.example.com"}, Logger: zerolog.New(zerolog.NewTestWriter(t)),
		Registerer: prometheus.NewRegistry()}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func members(n int, ip func(i int) string) []Member {
	var ms []Member
	for i := range n {
		ms = append(ms, Member{Name: string(rune('a' + i)), Addr: netip.MustParseAddr(ip(i)), Eligible: true, Self: i == 0})
	}
	return ms
}

func v4(i int) string { return netip.AddrFrom4([4]byte{10, 0, 0, byte(1 + i)}).String() }

func query(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func first(int) int { return 0 }

func TestRespond(t *testing.T) {
	s := newTestServer(t, func(c *Config) {
		c.NS = []NS{{Name: "ns1.ws.example.com.", Addr: netip.MustParseAddr("10.0.0.1")}, {Name: "ns.other.net."}}
	})
	s.Update(append(members(3, v4), Member{Name: "v6", Addr: netip.MustParseAddr("fd00::9"), Eligible: true}))
	for _, tc := range []struct {
		label  string
		req    *dns.Msg
		rcode  int
		answer int // records in the answer section
		ns     int
		extra  int
		aa     bool
	}{
		{label: "A", req: query("ws.example.com.", dns.TypeA), rcode: dns.RcodeSuccess, answer: 3, aa: true},
		{label: "A, mixed case", req: query("WS.Example.COM.", dns.TypeA), rcode: dns.RcodeSuccess, answer: 3, aa: true},
		{label: "AAAA", req: query("ws.example.com.", dns.TypeAAAA), rcode: dns.RcodeSuccess, answer: 1, aa: true},
		{label: "ANY", req: query("ws.example.com.", dns.TypeANY), rcode: dns.RcodeSuccess, answer: 4, aa: true},
		{label: "SOA", req: query("ws.example.com.", dns.TypeSOA), rcode: dns.RcodeSuccess, answer: 1, aa: true},
		{label: "NS with in-zone glue", req: query("ws.example.com.", dns.TypeNS), rcode: dns.RcodeSuccess, answer: 2, extra: 1, aa: true},
		{label: "glue name", req: query("ns1.ws.example.com.", dns.TypeA), rcode: dns.RcodeSuccess, answer: 1, aa: true},
		{label: "glue name, AAAA: nodata", req: query("ns1.ws.example.com.", dns.TypeAAAA), rcode: dns.RcodeSuccess, ns: 1, aa: true},
		{label: "MX at the apex: nodata", req: query("ws.example.com.", dns.TypeMX), rcode: dns.RcodeSuccess, ns: 1, aa: true},
		{label: "other name in the zone", req: query("x.ws.example.com.", dns.TypeA), rcode: dns.RcodeNameError, ns: 1, aa: true},
		{label: "outside the zone", req: query("example.com.", dns.TypeA), rcode: dns.RcodeRefused},
		{label: "elsewhere", req: query("ws.example.org.", dns.TypeA), rcode: dns.RcodeRefused},
		{label: "no question", req: new(dns.Msg), rcode: dns.RcodeFormatError},
		{label: "EDNS0", req: query("ws.example.com.", dns.TypeA).SetEdns0(4096, true), rcode: dns.RcodeSuccess, answer: 3, extra: 1, aa: true},
	} {
		t.Run(tc.label, func(t *testing.T) {
			r := s.respond(tc.req, true, first)
			if r.Rcode != tc.rcode || len(r.Answer) != tc.answer || len(r.Ns) != tc.ns || len(r.Extra) != tc.extra || r.Authoritative != tc.aa {
				t.Fatalf("rcode %s, %d/%d/%d records, aa %v; want %s, %d/%d/%d, aa %v\n%v", dns.RcodeToString[r.Rcode], len(r.Answer), len(r.Ns), len(r.Extra), r.Authoritative,
					dns.RcodeToString[tc.rcode], tc.answer, tc.ns, tc.extra, tc.aa, r)
			}
			if _, err := r.Pack(); err != nil {
				t.Fatalf("pack: %v", err)
			}
		})
	}
	bad := query("ws.example.com.", dns.TypeA).SetEdns0(4096, false)
	bad.IsEdns0().SetVersion(1)
	if r := s.respond(bad, true, first); r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: rcode %s; want BADVERS", dns.RcodeToString[r.Rcode])
	}
}

// Every query gets a random subset of at most MaxAnswers, in random
// order; over many queries every node is answered.
func TestRespondSpreads(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxAnswers = 3 })
	s.Update(members(10, v4))
	seen, orders := map[string]int{}, map[string]bool{}
	for range 500 {
		r := s.respond(query("ws.example.com.", dns.TypeA), true, randIntN)
		if len(r.Answer) != 3 {
			t.Fatalf("%d answers; want 3", len(r.Answer))
		}
		var order string
		for _, rr := range r.Answer {
			ip := rr.(*dns.A).A.String()
			seen[ip]++
			order += ip + " "
		}
		orders[order] = true
	}
	if len(seen) != 10 || len(orders) < 100 {
		t.Fatalf("%d addresses, %d orders over 500 queries; want 10 and many", len(seen), len(orders))
	}
	for ip, n := range seen {
		if n < 100 || n > 200 { // 150 expected
			t.Errorf("%s answered %d times of 1500; want about 150", ip, n)
		}
	}
}

// No --dns-ns: the zone's own name is its name server, the nodes its glue.
func TestRespondDefaultNS(t *testing.T) {
	s := newTestServer(t, nil)
	s.Update(members(2, v4))
	r := s.respond(query("ws.example.com.", dns.TypeNS), true, first)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "ws.example.com." || len(r.Extra) != 2 {
		t.Fatalf("NS answer %v", r)
	}
}

func TestRespondEmpty(t *testing.T) {
	s := newTestServer(t, nil)
	s.Update(nil)
	if r := s.respond(query("ws.example.com.", dns.TypeA), true, first); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("nothing known: rcode %s; want SERVFAIL, never an empty answer", dns.RcodeToString[r.Rcode])
	}
}

// Past 512 bytes over UDP without EDNS0 the answer is cut with TC set;
// over TCP the same question gets every record.
func TestTruncation(t *testing.T) {
	s := newTestServer(t, func(c *Config) { c.MaxAnswers = 64 })
	s.Update(members(60, func(i int) string { return netip.AddrFrom16([16]byte{0xfd, 15: byte(i + 1)}).String() }))
	q := query("ws.example.com.", dns.TypeAAAA)
	udp := s.respond(q, true, first)
	if !udp.Truncated || udp.Len() > 512 || len(udp.Answer) == 0 {
		t.Fatalf("udp: tc %v, %d bytes, %d answers; want tc, at most 512 bytes", udp.Truncated, udp.Len(), len(udp.Answer))
	}
	tcp := s.respond(q, false, first)
	if tcp.Truncated || len(tcp.Answer) != 60 {
		t.Fatalf("tcp: tc %v, %d answers; want all 60", tcp.Truncated, len(tcp.Answer))
	}
	big := s.respond(query("ws.example.com.", dns.TypeAAAA).SetEdns0(4096, false), true, first)
	if big.Len() > maxUDPAnswer || !big.Truncated || len(big.Answer) <= len(udp.Answer) || big.IsEdns0() == nil {
		t.Fatalf("edns0 4096: %d bytes, tc %v, %d answers", big.Len(), big.Truncated, len(big.Answer))
	}
}

// The real thing over sockets: UDP and TCP, the same set; garbage and
// oversized packets dropped and counted; the rate limit.
func TestServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newTestServer(t, func(c *Config) { c.Registerer = reg; c.RateLimit, c.RateBurst = 1, 30 })
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	s.Update(members(5, v4))
	addr := s.Addr()
	for _, netw := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: netw, Timeout: 2 * time.Second}
		r, _, err := c.Exchange(query("ws.example.com.", dns.TypeA), addr)
		if err != nil {
			t.Fatalf("%s: %v", netw, err)
		}
		var got []string
		for _, rr := range r.Answer {
			got = append(got, rr.(*dns.A).A.String())
		}
		slices.Sort(got)
		if want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"}; !slices.Equal(got, want) {
			t.Fatalf("%s: %v; want %v", netw, got, want)
		}
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("garbage"))                              // shorter than a header
	conn.Write(make([]byte, 12))                               // a header with no question
	conn.Write(append(make([]byte, 12), make([]byte, 600)...)) // oversized
	resp := query("ws.example.com.", dns.TypeA)
	resp.Response = true
	b, _ := resp.Pack()
	conn.Write(b) // a response: could be a reflection
	waitFor(t, "garbage counted", func() bool {
		return counterValue(s.m.dropped.WithLabelValues("garbage")) >= 3 && counterValue(s.m.dropped.WithLabelValues("oversized")) >= 1
	})
	// None of those got an answer.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := conn.Read(make([]byte, 1024)); err == nil {
		t.Fatalf("garbage got a %d-byte answer", n)
	}
	// The rate limit: a burst of 30 answered, then drops and empty
	// truncated slips.
	q, _ := query("ws.example.com.", dns.TypeA).Pack()
	for range 60 {
		conn.Write(q)
	}
	full, slipped := 0, 0
	conn.SetReadDeadline(time.Now().Add(time.Second))
	for {
		buf := make([]byte, 1024)
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if m.Truncated && len(m.Answer) == 0 {
			slipped++
		} else {
			full++
		}
	}
	if full > 30 || full < 25 || slipped < 10 {
		t.Fatalf("%d full answers, %d slips of 60 at a burst of 30; want about 30 and 15", full, slipped)
	}
	if got := counterValue(s.m.queries.WithLabelValues("A", "NOERROR")); got < 25 {
		t.Errorf("meshlb_dns_queries_total{A,NOERROR} = %v", got)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal("second shutdown:", err)
	}
}

func TestConfig(t *testing.T) {
	for label, c := range map[string]Config{
		"no addr":  {Names: []string{"a.b"}},
		"no names": {Addr: ":53"},
		"bad name": {Addr: ":53", Names: []string{"a..b"}},
		"ttl":      {Addr: ":53", Names: []string{"a.b"}, TTL: 2 * time.Hour},
		"glue":     {Addr: ":53", Names: []string{"a.b"}, NS: []NS{{Name: "ns.a.b."}}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", label)
		}
	}
	for in, want := range map[string]NS{
		"ns1.ws.example.com=10.0.0.1": {Name: "ns1.ws.example.com.", Addr: netip.MustParseAddr("10.0.0.1")},
		"NS.Other.Net":                {Name: "ns.other.net."},
	} {
		if got, err := ParseNS(in); err != nil || got != want {
			t.Errorf("ParseNS(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a..b", "ns=notanip"} {
		if _, err := ParseNS(in); err == nil {
			t.Errorf("ParseNS(%q) accepted", in)
		}
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FuzzServeDNS feeds the handler arbitrary packets the way the server
// does (accept, unpack, respond): it must never panic, and whatever it
// answers must pack and fit the transport.
func FuzzServeDNS(f *testing.F) {
	for _, q := range []*dns.Msg{
		query("ws.example.com.", dns.TypeA), query("ws.example.com.", dns.TypeAAAA).SetEdns0(1232, true),
		query("x.ws.example.com.", dns.TypeNS), query("example.org.", dns.TypeSOA), query("ws.example.com.", dns.TypeANY),
	} {
		b, _ := q.Pack()
		f.Add(b)
	}
	f.Add([]byte("\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"))
	s, err := New(Config{Addr: "127.0.0.1:0", Names: []string{"ws.example.com", "example.net"}, MaxAnswers: 64,
		NS: []NS{{Name: "ns1.ws.example.com.", Addr: netip.MustParseAddr("fd00::1")}}})
	if err != nil {
		f.Fatal(err)
	}
	s.Update(members(40, func(i int) string { return netip.AddrFrom16([16]byte{0xfd, 15: byte(i + 1)}).String() }))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxQuery {
			return // the reader drops these
		}
		var h dns.Header
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		h.Bits = 0
		if req.Response {
			h.Bits |= 1 << 15
		}
		h.Bits |= uint16(req.Opcode) << 11
		h.Qdcount, h.Ancount, h.Nscount, h.Arcount = uint16(len(req.Question)), uint16(len(req.Answer)), uint16(len(req.Ns)), uint16(len(req.Extra))
		if s.accept(h) != dns.MsgAccept {
			return
		}
		for _, udp := range []bool{true, false} {
			r := s.respond(req, udp, randIntN)
			out, err := r.Pack()
			if err != nil {
				t.Fatalf("answer does not pack: %v\n%v", err, r)
			}
			if udp && len(out) > maxUDPAnswer {
				t.Fatalf("%d-byte UDP answer", len(out))
			}
		}
	})
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
