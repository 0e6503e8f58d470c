package router

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// newReq builds a request for target from remote, with hdr as name/value
// pairs added in order (so a name may repeat).
func newReq(target, remote string, hdr ...string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func mustExtractor(t testing.TB, cfg KeyConfig) *KeyExtractor {
	t.Helper()
	e, err := NewKeyExtractor(cfg)
	if err != nil {
		t.Fatalf("NewKeyExtractor(%+v): %v", cfg, err)
	}
	return e
}

func mustPrefixes(t testing.TB, s string) []netip.Prefix {
	t.Helper()
	p, err := ParseTrustedProxies(s)
	if err != nil {
		t.Fatalf("ParseTrustedProxies(%q): %v", s, err)
	}
	return p
}

type keyCase struct {
	name       string
	sources    string
	trusted    string
	v6         int
	cookie     string
	target     string
	remote     string
	hdr        []string
	wantKey    string
	wantSource string
	wantOK     bool
}

var longKey = strings.Repeat("k", MaxKeyLen+1)
var maxLenKey = strings.Repeat("k", MaxKeyLen)

var keyCases = []keyCase{
	// Sources, one at a time.
	{name: "query", target: "/?session_id=abc", remote: "1.2.3.4:5", wantKey: "abc", wantSource: "query:session_id", wantOK: true},
	{name: "query escaped", target: "/?session%5Fid=a%20b+c", remote: "1.2.3.4:5", wantKey: "a b c", wantSource: "query:session_id", wantOK: true},
	{name: "query first value", target: "/?x=1&session_id=first&session_id=second", remote: "1.2.3.4:5", wantKey: "first", wantSource: "query:session_id", wantOK: true},
	{name: "query empty first value is absent", target: "/?session_id=&session_id=second", remote: "1.2.3.4:5", wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "query bad escape skipped", target: "/?session_id=%zz&session_id=ok", remote: "1.2.3.4:5", wantKey: "ok", wantSource: "query:session_id", wantOK: true},
	{name: "query semicolon pair skipped", target: "/?session_id=a;b&session_id=ok", remote: "1.2.3.4:5", wantKey: "ok", wantSource: "query:session_id", wantOK: true},
	{name: "query name is case sensitive", target: "/?Session_ID=abc", remote: "1.2.3.4:5", wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "cookie", target: "/", remote: "1.2.3.4:5", hdr: []string{"Cookie", "a=1; sid=s1; b=2"}, wantKey: "s1", wantSource: "cookie:sid", wantOK: true},
	{name: "cookie on second line", target: "/", remote: "1.2.3.4:5", hdr: []string{"Cookie", "a=1", "Cookie", "sid=s2"}, wantKey: "s2", wantSource: "cookie:sid", wantOK: true},
	{name: "cookie quoted", target: "/", remote: "1.2.3.4:5", hdr: []string{"Cookie", `sid="q"`}, wantKey: "q", wantSource: "cookie:sid", wantOK: true},
	{name: "cookie empty", target: "/", remote: "1.2.3.4:5", hdr: []string{"Cookie", "sid="}, wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "header", target: "/", remote: "1.2.3.4:5", hdr: []string{"X-Session-Id", "  h1 \t"}, wantKey: "h1", wantSource: "header:X-Session-Id", wantOK: true},
	{name: "header blank", target: "/", remote: "1.2.3.4:5", hdr: []string{"X-Session-Id", "   "}, wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "header first line", target: "/", remote: "1.2.3.4:5", hdr: []string{"X-Session-Id", "one", "X-Session-Id", "two"}, wantKey: "one", wantSource: "header:X-Session-Id", wantOK: true},
	{name: "ip v4", target: "/", remote: "1.2.3.4:5", wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "ip v6 masked to /64", target: "/", remote: "[2001:db8:1:2:3:4:5:6]:443", wantKey: "2001:db8:1:2::", wantSource: "ip", wantOK: true},
	{name: "ip v6 /48", v6: 48, target: "/", remote: "[2001:db8:1:2:3:4:5:6]:443", wantKey: "2001:db8:1::", wantSource: "ip", wantOK: true},
	{name: "ip v6 /128", v6: 128, target: "/", remote: "[2001:db8:1:2:3:4:5:6]:443", wantKey: "2001:db8:1:2:3:4:5:6", wantSource: "ip", wantOK: true},
	{name: "ip v4-mapped", target: "/", remote: "[::ffff:1.2.3.4]:5", wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "ip zone dropped", v6: 128, target: "/", remote: "[fe80::1%eth0]:5", wantKey: "fe80::1", wantSource: "ip", wantOK: true},
	{name: "ip unknown", target: "/", remote: "pipe", wantOK: false},
	{name: "ip without port", target: "/", remote: "1.2.3.4", wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},

	// Ordering: the first source with a value wins.
	{name: "query before cookie", target: "/?session_id=q", remote: "1.2.3.4:5", hdr: []string{"Cookie", "sid=c", "X-Session-ID", "h"}, wantKey: "q", wantSource: "query:session_id", wantOK: true},
	{name: "cookie before header", target: "/", remote: "1.2.3.4:5", hdr: []string{"Cookie", "sid=c", "X-Session-ID", "h"}, wantKey: "c", wantSource: "cookie:sid", wantOK: true},
	{name: "custom order", sources: "header:X-User, query:u", target: "/?u=q", remote: "1.2.3.4:5", hdr: []string{"X-User", "h"}, wantKey: "h", wantSource: "header:X-User", wantOK: true},
	{name: "custom order falls through", sources: "header:X-User, query:u", target: "/?u=q", remote: "1.2.3.4:5", wantKey: "q", wantSource: "query:u", wantOK: true},
	{name: "no ip source, nothing found", sources: "query:u", target: "/", remote: "1.2.3.4:5", wantOK: false},
	{name: "same value, same key across sources", sources: "cookie:sid,query:sid", target: "/?sid=v", remote: "1.2.3.4:5", wantKey: "v", wantSource: "query:sid", wantOK: true},

	// Long keys are absent.
	{name: "long query", target: "/?session_id=" + longKey, remote: "1.2.3.4:5", wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "max length query", target: "/?session_id=" + maxLenKey, remote: "1.2.3.4:5", wantKey: maxLenKey, wantSource: "query:session_id", wantOK: true},
	{name: "long header", target: "/", remote: "1.2.3.4:5", hdr: []string{"X-Session-ID", longKey}, wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "long cookie", target: "/", remote: "1.2.3.4:5", hdr: []string{"Cookie", "sid=" + longKey}, wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},

	// protocol:PREFIX.
	{name: "protocol", sources: "protocol:session.,ip", target: "/", remote: "1.2.3.4:5", hdr: []string{"Sec-WebSocket-Protocol", "chat, session.abc123"}, wantKey: "abc123", wantSource: "protocol:session.", wantOK: true},
	{name: "protocol spaces and tabs", sources: "protocol:session.,ip", target: "/", remote: "1.2.3.4:5", hdr: []string{"Sec-WebSocket-Protocol", " chat ,\t session.x1 \t, other"}, wantKey: "x1", wantSource: "protocol:session.", wantOK: true},
	{name: "protocol second header line", sources: "protocol:session.,ip", target: "/", remote: "1.2.3.4:5", hdr: []string{"Sec-WebSocket-Protocol", "chat", "Sec-WebSocket-Protocol", "v2, session.y"}, wantKey: "y", wantSource: "protocol:session.", wantOK: true},
	{name: "protocol first match wins", sources: "protocol:session.,ip", target: "/", remote: "1.2.3.4:5", hdr: []string{"Sec-WebSocket-Protocol", "session.a, session.b"}, wantKey: "a", wantSource: "protocol:session.", wantOK: true},
	{name: "protocol prefix alone is absent", sources: "protocol:session.,ip", target: "/", remote: "1.2.3.4:5", hdr: []string{"Sec-WebSocket-Protocol", "session., session.b"}, wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "protocol no match", sources: "protocol:session.,ip", target: "/", remote: "1.2.3.4:5", hdr: []string{"Sec-WebSocket-Protocol", "chat, xsession.a, Session.b"}, wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "protocol empty tokens", sources: "protocol:session.,ip", target: "/", remote: "1.2.3.4:5", hdr: []string{"Sec-WebSocket-Protocol", ",, ,session.z,"}, wantKey: "z", wantSource: "protocol:session.", wantOK: true},
	{name: "protocol long", sources: "protocol:s.,ip", target: "/", remote: "1.2.3.4:5", hdr: []string{"Sec-WebSocket-Protocol", "s." + longKey}, wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},

	// Session cookie insertion.
	{name: "session cookie before ip", sources: "query:u,ip", cookie: "mlb", target: "/", remote: "1.2.3.4:5", hdr: []string{"Cookie", "mlb=n1"}, wantKey: "n1", wantSource: "cookie:mlb", wantOK: true},
	{name: "session cookie after query", sources: "query:u,ip", cookie: "mlb", target: "/?u=q", remote: "1.2.3.4:5", hdr: []string{"Cookie", "mlb=n1"}, wantKey: "q", wantSource: "query:u", wantOK: true},
	{name: "session cookie appended", sources: "query:u", cookie: "mlb", target: "/", remote: "1.2.3.4:5", hdr: []string{"Cookie", "mlb=n1"}, wantKey: "n1", wantSource: "cookie:mlb", wantOK: true},

	// Forwarding headers through the ip source.
	{name: "xff from trusted peer", trusted: "10.0.0.0/8", target: "/", remote: "10.0.0.1:5", hdr: []string{"X-Forwarded-For", "1.2.3.4, 10.0.0.2"}, wantKey: "1.2.3.4", wantSource: "ip", wantOK: true},
	{name: "xff ignored from untrusted peer", trusted: "10.0.0.0/8", target: "/", remote: "9.9.9.9:5", hdr: []string{"X-Forwarded-For", "1.2.3.4"}, wantKey: "9.9.9.9", wantSource: "ip", wantOK: true},
	{name: "xff v6 masked", trusted: "10.0.0.0/8", target: "/", remote: "10.0.0.1:5", hdr: []string{"X-Forwarded-For", "2001:db8::1:2:3:4"}, wantKey: "2001:db8::", wantSource: "ip", wantOK: true},
}

func (c keyCase) extractor(t testing.TB) *KeyExtractor {
	return mustExtractor(t, KeyConfig{
		Sources:        c.sources,
		TrustedProxies: mustPrefixes(t, c.trusted),
		IPv6Prefix:     c.v6,
		SessionCookie:  c.cookie,
	})
}

func TestKey(t *testing.T) {
	for _, c := range keyCases {
		t.Run(c.name, func(t *testing.T) {
			e := c.extractor(t)
			key, src, ok := e.Key(newReq(c.target, c.remote, c.hdr...))
			if key != c.wantKey || src != c.wantSource || ok != c.wantOK {
				t.Errorf("Key = %.40q, %q, %v; want %.40q, %q, %v", key, src, ok, c.wantKey, c.wantSource, c.wantOK)
			}
		})
	}
}

func TestKeyAllocations(t *testing.T) {
	e := mustExtractor(t, KeyConfig{TrustedProxies: mustPrefixes(t, "10.0.0.0/8")})
	r := newReq("/?a=1&b=2", "10.0.0.1:5", "Cookie", "a=1; b=2", "X-Forwarded-For", "1.2.3.4, 10.0.0.2")
	// Falling through query, cookie and header to ip costs at most the
	// key string and r.Cookie's scan.
	if n := testing.AllocsPerRun(100, func() { e.Key(r) }); n > 3 {
		t.Errorf("Key allocates %v times; want <= 3", n)
	}
	r = newReq("/?session_id=abc", "1.2.3.4:5")
	if n := testing.AllocsPerRun(100, func() { e.Key(r) }); n != 0 {
		t.Errorf("Key from a plain query allocates %v times; want 0", n)
	}
}

func TestSources(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  KeyConfig
		want []string
	}{
		{"default", KeyConfig{}, []string{"query:session_id", "cookie:sid", "header:X-Session-Id", "ip"}},
		{"blank is default", KeyConfig{Sources: "  "}, []string{"query:session_id", "cookie:sid", "header:X-Session-Id", "ip"}},
		{"normalized", KeyConfig{Sources: " QUERY:a , header:x-user-id,, IP ,"}, []string{"query:a", "header:X-User-Id", "ip"}},
		{"session cookie inserted before ip", KeyConfig{Sources: "query:a,ip,header:h", SessionCookie: "mlb"}, []string{"query:a", "cookie:mlb", "ip", "header:H"}},
		{"session cookie appended", KeyConfig{Sources: "query:a", SessionCookie: "mlb"}, []string{"query:a", "cookie:mlb"}},
		{"session cookie already present", KeyConfig{Sources: "ip,cookie:mlb", SessionCookie: "mlb"}, []string{"ip", "cookie:mlb"}},
		{"session cookie default", KeyConfig{SessionCookie: "sid"}, []string{"query:session_id", "cookie:sid", "header:X-Session-Id", "ip"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := mustExtractor(t, c.cfg)
			got := e.Sources()
			if !slices.Equal(got, c.want) {
				t.Errorf("Sources = %q; want %q", got, c.want)
			}
			got[0] = "mutated"
			if e.Sources()[0] == "mutated" {
				t.Error("Sources returned the extractor's own slice")
			}
		})
	}
}

func TestNewKeyExtractorErrors(t *testing.T) {
	bad := netip.Prefix{}
	for _, c := range []struct {
		name    string
		cfg     KeyConfig
		wantSub string
	}{
		{"unknown kind", KeyConfig{Sources: "query:a,path:x"}, `"path:x"`},
		{"no kind", KeyConfig{Sources: "session_id"}, `unknown kind`},
		{"empty name", KeyConfig{Sources: "cookie:"}, `"cookie:"`},
		{"empty header name", KeyConfig{Sources: "header: "}, `needs a name`},
		{"ip with name", KeyConfig{Sources: "ip:x"}, `"ip:x"`},
		{"duplicate", KeyConfig{Sources: "query:a,ip,query:a"}, `duplicate`},
		{"duplicate header by case", KeyConfig{Sources: "header:x-a,header:X-A"}, `"header:X-A": duplicate`},
		{"duplicate ip", KeyConfig{Sources: "ip,ip"}, `"ip": duplicate`},
		{"bad header name", KeyConfig{Sources: "header:X A"}, `not a token`},
		{"bad cookie name", KeyConfig{Sources: "cookie:a=b"}, `not a token`},
		{"bad protocol prefix", KeyConfig{Sources: "protocol:a/b"}, `not a token`},
		{"only commas", KeyConfig{Sources: ",,"}, `none given`},
		{"ipv6 prefix too long", KeyConfig{IPv6Prefix: 129}, `129`},
		{"ipv6 prefix negative", KeyConfig{IPv6Prefix: -1}, `-1`},
		{"bad session cookie", KeyConfig{SessionCookie: "a b"}, `"a b"`},
		{"invalid trusted prefix", KeyConfig{TrustedProxies: []netip.Prefix{bad}}, `trusted proxy`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewKeyExtractor(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.wantSub) {
				t.Errorf("NewKeyExtractor error = %v; want one containing %s", err, c.wantSub)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	for _, c := range []struct {
		in      string
		want    string // prefixes joined by ","
		wantErr string
	}{
		{in: "", want: ""},
		{in: "10.0.0.0/8, 192.168.1.7, ::1", want: "10.0.0.0/8,192.168.1.7/32,::1/128"},
		{in: "10.1.2.3/8,", want: "10.0.0.0/8"},
		{in: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{in: "::ffff:10.0.0.1", want: "10.0.0.1/32"},
		{in: "2001:db8::/32 ,\t127.0.0.1", want: "2001:db8::/32,127.0.0.1/32"},
		{in: "10.0.0.0/8, nope", wantErr: `"nope"`},
		{in: "10.0.0.0/33", wantErr: `"10.0.0.0/33"`},
		{in: "fe80::1%eth0", wantErr: `"fe80::1%eth0"`},
	} {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseTrustedProxies(c.in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("error = %v; want one naming %s", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s []string
			for _, p := range got {
				s = append(s, p.String())
			}
			if j := strings.Join(s, ","); j != c.want {
				t.Errorf("ParseTrustedProxies(%q) = %s; want %s", c.in, j, c.want)
			}
		})
	}
}

func TestClientIP(t *testing.T) {
	for _, c := range []struct {
		name    string
		trusted string
		remote  string
		hdr     []string
		want    string // "" for an invalid Addr
	}{
		{"untrusted peer with xff", "10.0.0.0/8", "9.9.9.9:1", []string{"X-Forwarded-For", "1.2.3.4"}, "9.9.9.9"},
		{"no trusted proxies", "", "10.0.0.1:1", []string{"X-Forwarded-For", "1.2.3.4"}, "10.0.0.1"},
		{"trusted peer, walk from right", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "1.2.3.4, 10.0.0.2"}, "1.2.3.4"},
		{"right-most untrusted wins over spoofed left", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.0.0.2"}, "1.2.3.4"},
		{"garbage left of the client is ignored", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "garbage, 1.2.3.4"}, "1.2.3.4"},
		{"all trusted gives left-most", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "10.0.0.5, 10.0.0.2"}, "10.0.0.5"},
		{"several lines", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "5.5.5.5, 1.2.3.4", "X-Forwarded-For", "10.0.0.3"}, "1.2.3.4"},
		{"malformed xff", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "1.2.3.4, bogus"}, "10.0.0.1"},
		{"empty xff element", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "1.2.3.4,"}, "10.0.0.1"},
		{"empty xff", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", ""}, "10.0.0.1"},
		{"xff with port", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "1.2.3.4:5678"}, "1.2.3.4"},
		{"xff bracketed v6 with port", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "[2001:db8::1]:80"}, "2001:db8::1"},
		{"xff v4-mapped", "10.0.0.0/8", "10.0.0.1:1", []string{"X-Forwarded-For", "::ffff:1.2.3.4"}, "1.2.3.4"},
		{"mapped trusted peer", "10.0.0.0/8", "[::ffff:10.0.0.1]:1", []string{"X-Forwarded-For", "1.2.3.4"}, "1.2.3.4"},
		{"forwarded v6 quoted", "10.0.0.0/8", "10.0.0.1:1", []string{"Forwarded", `for="[2001:db8::1]:4711"`}, "2001:db8::1"},
		{"forwarded several", "10.0.0.0/8", "10.0.0.1:1", []string{"Forwarded", `for=192.0.2.60;proto=http;by=203.0.113.43, For=10.0.0.9`}, "192.0.2.60"},
		{"forwarded quoted comma elsewhere", "10.0.0.0/8", "10.0.0.1:1", []string{"Forwarded", `for=192.0.2.60;x="a,b"`}, "192.0.2.60"},
		{"forwarded unknown", "10.0.0.0/8", "10.0.0.1:1", []string{"Forwarded", `for=unknown`}, "10.0.0.1"},
		{"forwarded obfuscated", "10.0.0.0/8", "10.0.0.1:1", []string{"Forwarded", `for=_hidden`}, "10.0.0.1"},
		{"forwarded without for", "10.0.0.0/8", "10.0.0.1:1", []string{"Forwarded", `proto=https`}, "10.0.0.1"},
		{"forwarded unterminated quote", "10.0.0.0/8", "10.0.0.1:1", []string{"Forwarded", `for="1.2.3.4`}, "10.0.0.1"},
		{"xff preferred over forwarded", "10.0.0.0/8", "10.0.0.1:1", []string{"Forwarded", "for=5.5.5.5", "X-Forwarded-For", "1.2.3.4"}, "1.2.3.4"},
		{"trusted v6 peer", "2001:db8::/32", "[2001:db8::9]:1", []string{"X-Forwarded-For", "2001:db9::1"}, "2001:db9::1"},
		{"unparsable peer", "10.0.0.0/8", "@", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := mustExtractor(t, KeyConfig{TrustedProxies: mustPrefixes(t, c.trusted)})
			got := e.ClientIP(newReq("/", c.remote, c.hdr...))
			want := netip.Addr{}
			if c.want != "" {
				want = netip.MustParseAddr(c.want)
			}
			if got != want {
				t.Errorf("ClientIP = %v; want %v", got, want)
			}
		})
	}
}

func TestIsTrusted(t *testing.T) {
	e := mustExtractor(t, KeyConfig{TrustedProxies: mustPrefixes(t, "10.0.0.0/8, ::1")})
	for _, c := range []struct {
		addr netip.Addr
		want bool
	}{
		{netip.MustParseAddr("10.1.2.3"), true},
		{netip.MustParseAddr("::ffff:10.1.2.3"), true},
		{netip.MustParseAddr("11.1.2.3"), false},
		{netip.MustParseAddr("::1"), true},
		{netip.MustParseAddr("::2"), false},
		{netip.Addr{}, false},
	} {
		if got := e.IsTrusted(c.addr); got != c.want {
			t.Errorf("IsTrusted(%v) = %v; want %v", c.addr, got, c.want)
		}
	}
}

func TestKeyExtractorConfigCopied(t *testing.T) {
	trusted := mustPrefixes(t, "10.0.0.0/8")
	e := mustExtractor(t, KeyConfig{TrustedProxies: trusted})
	trusted[0] = netip.MustParsePrefix("192.168.0.0/16")
	if !e.IsTrusted(netip.MustParseAddr("10.0.0.1")) {
		t.Error("changing the caller's slice changed the extractor")
	}
}
