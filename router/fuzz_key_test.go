package router

import (
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// fuzzRequest builds a request directly, not through a parser, so the
// fuzzer can put any bytes in any field.
func fuzzRequest(remote, rawQuery, cookie, session, protocol, xff, fwd string) *http.Request {
	h := http.Header{}
	set := func(name, v string) {
		if v != "" {
			h[name] = strings.Split(v, "\n") // a newline starts another header line
		}
	}
	set("Cookie", cookie)
	set("X-Session-Id", session)
	set("Sec-Websocket-Protocol", protocol)
	set("X-Forwarded-For", xff)
	set("Forwarded", fwd)
	return &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: "/", RawQuery: rawQuery},
		Header:     h,
		RemoteAddr: remote,
	}
}

func FuzzKey(f *testing.F) {
	first := func(hdr []string, name string) string {
		for i := 0; i+1 < len(hdr); i += 2 {
			if http.CanonicalHeaderKey(hdr[i]) == name {
				return hdr[i+1]
			}
		}
		return ""
	}
	for _, c := range keyCases {
		u, _ := url.Parse(c.target)
		f.Add(c.remote, u.RawQuery, first(c.hdr, "Cookie"), first(c.hdr, "X-Session-Id"),
			first(c.hdr, "Sec-Websocket-Protocol"), first(c.hdr, "X-Forwarded-For"), "")
	}
	f.Add("10.0.0.1:1", "", "", "", "", "", `for="[2001:db8::1]:4711";proto=https, for=10.0.0.2`)
	f.Add("10.0.0.1:1", "a=%&session_id=%41", "sid=\"x\"; sid=y", " ", "session.,session.\t", "1.2.3.4,\n10.0.0.3", `for="\"`)

	e := mustExtractor(f, KeyConfig{
		Sources:        "query:session_id,cookie:sid,header:X-Session-ID,protocol:session.,ip",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")},
	})
	sources := e.Sources()

	f.Fuzz(func(t *testing.T, remote, rawQuery, cookie, session, protocol, xff, fwd string) {
		r := fuzzRequest(remote, rawQuery, cookie, session, protocol, xff, fwd)
		key, src, ok := e.Key(r)
		key2, src2, ok2 := e.Key(r)
		if key != key2 || src != src2 || ok != ok2 {
			t.Fatalf("not deterministic: %q %q %v then %q %q %v", key, src, ok, key2, src2, ok2)
		}
		if len(key) > MaxKeyLen {
			t.Fatalf("key of %d bytes; want at most %d", len(key), MaxKeyLen)
		}
		if ok != (key != "") || ok != slices.Contains(sources, src) {
			t.Fatalf("Key = %q, %q, %v: inconsistent", key, src, ok)
		}

		// The query source agrees with the standard parser.
		var want string
		if vs := parseQueryLenient(rawQuery)["session_id"]; len(vs) > 0 && len(vs[0]) <= MaxKeyLen {
			want = vs[0]
		}
		if (src == "query:session_id") != (want != "") || (want != "" && key != want) {
			t.Fatalf("Key = %q from %q; url.ParseQuery gives %q", key, src, want)
		}

		ip := e.ClientIP(r)
		if peer := parseHostAddr(remote); ip.IsValid() != peer.IsValid() {
			t.Fatalf("ClientIP = %v for peer %q", ip, remote)
		}
		if ip.IsValid() && (ip.Is4In6() || ip.Zone() != "") {
			t.Fatalf("ClientIP = %v; want unmapped and without zone", ip)
		}
		if src == "ip" {
			if _, err := netip.ParseAddr(key); err != nil {
				t.Fatalf("ip key %q: %v", key, err)
			}
		}
	})
}

// parseQueryLenient is url.ParseQuery without its error: bad pairs are
// skipped either way.
func parseQueryLenient(q string) url.Values {
	v, _ := url.ParseQuery(q)
	return v
}
