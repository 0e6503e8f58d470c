package router

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
)

func TestParseRoute(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Route
	}{
		{"pool=rides", Route{Pool: "rides"}},
		{"host=Rides.Example.com,path=/ws,pool=rides", Route{Host: "rides.example.com", Path: "/ws", Pool: "rides"}},
		{" path=/chat/ , pool=chat ", Route{Path: "/chat/", Pool: "chat"}},
		{"pool=x,host=*.example.com", Route{Host: "*.example.com", Pool: "x"}},
	} {
		got, err := ParseRoute(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRoute(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if again, err := ParseRoute(got.String()); err != nil || again != got {
			t.Errorf("ParseRoute(%q.String() = %q) = %+v, %v", tc.in, got.String(), again, err)
		}
	}
	for _, bad := range []string{
		"", "host=a.com", "path=/ws", "pool=", "pool=a,pool=b", "pool=a,colour=red", "pool",
		"path=ws,pool=a", "path=/ws?x=1,pool=a", "host=a.com:80,pool=a", "host=*,pool=a",
		"host=a.*.com,pool=a", "host=*.*.com,pool=a", "host=a..com,pool=a", "host=.a.com,pool=a",
		"host=a com,pool=a",
	} {
		if r, err := ParseRoute(bad); err == nil {
			t.Errorf("ParseRoute(%q) = %+v; want an error", bad, r)
		}
	}
}

// TestRouteTablePicks: the most specific host first, then the longest
// path; a request no route matches goes to the default pool.
func TestRouteTablePicks(t *testing.T) {
	rt, err := newRouteTable([]Route{
		{Path: "/ws", Pool: "any-ws"},
		{Host: "*.example.com", Path: "/", Pool: "wild"},
		{Host: "*.eu.example.com", Pool: "eu"},
		{Host: "rides.example.com", Path: "/ws", Pool: "rides"},
		{Host: "rides.example.com", Path: "/ws/admin", Pool: "rides-admin"},
		{Path: "/chat/", Pool: "chat"},
	}, KeyConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, path, want string }{
		{"rides.example.com", "/ws", "rides"},
		{"RIDES.example.com:8443", "/ws/x", "rides"},
		{"rides.example.com.", "/ws/admin/1", "rides-admin"},
		{"rides.example.com", "/api", "wild"}, // falls through to the wildcard
		{"a.eu.example.com", "/ws", "eu"},
		{"eu.example.com", "/ws", "wild"}, // a wildcard is not its apex
		{"example.com", "/ws", "any-ws"},
		{"other.org", "/wsx", "any-ws"}, // a plain prefix, as NGINX's
		{"other.org", "/chat", DefaultPool},
		{"other.org", "/chat/room", "chat"},
		{"", "", DefaultPool},
		{"[::1]:80", "/ws", "any-ws"},
	} {
		if got := rt.pool(tc.host, tc.path); got != tc.want {
			t.Errorf("pool(%q, %q) = %q; want %q", tc.host, tc.path, got, tc.want)
		}
	}
	if _, err := newRouteTable([]Route{{Path: "/a", Pool: "x"}, {Path: "/a", Pool: "y"}}, KeyConfig{}, nil); err == nil {
		t.Error("the same host and path twice accepted")
	}
	if got := (*routeTable)(nil).pool("a", "/"); got != DefaultPool {
		t.Errorf("no routes: %q", got)
	}
}

// poolPicker has its own backends per pool and records the pools asked.
type poolPicker struct {
	pools map[string][]Backend
	mu    sync.Mutex
	asked []string // pool/key
}

func (p *poolPicker) Pick(pool string, key []byte, n int) ([]Backend, error) {
	p.mu.Lock()
	p.asked = append(p.asked, pool+"/"+string(key))
	p.mu.Unlock()
	bs := p.pools[pool]
	if len(bs) == 0 {
		return nil, ErrNoBackends
	}
	return bs[:min(n, len(bs))], nil
}

// TestRoutesSendToPools: WebSockets and HTTP requests reach the pool their
// host and path select, the rest the default pool, and a route to a pool
// without backends answers 503.
func TestRoutesSendToPools(t *testing.T) {
	p := &poolPicker{pools: map[string][]Backend{
		"rides":     {newBackend(t, "rides-1", echoWS("rides-1", nil, nil))},
		"chat":      {newBackend(t, "chat-1", httpEcho("chat-1"))},
		DefaultPool: {newBackend(t, "web-1", httpEcho("web-1"))},
	}}
	rt, srv := newFront(t, Config{Picker: p, Routes: []Route{
		{Path: "/ws", Pool: "rides"}, {Path: "/chat", Pool: "chat"}, {Path: "/empty", Pool: "empty"},
	}})
	c, resp := dial(t, wsURL(srv, "/ws?session_id=a"), nil)
	if got := resp.Header.Get("X-Backend"); got != "rides-1" {
		t.Fatalf("websocket on /ws reached %q", got)
	}
	roundTrip(t, c, websocket.MessageText, []byte("hi"))
	c.Close(websocket.StatusNormalClosure, "")
	for path, want := range map[string]string{"/chat/x": "chat-1", "/": "web-1", "/other": "web-1"} {
		r, err := http.Get(srv.URL + path + "?session_id=a")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if got := r.Header.Get("X-Backend"); got != want {
			t.Errorf("GET %s reached %q; want %q", path, got, want)
		}
	}
	r, err := http.Get(srv.URL + "/empty?session_id=a")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no backends") {
		t.Errorf("route to an empty pool: %d %s", r.StatusCode, body)
	}
	if err := rt.SetRoutes([]Route{{Path: "/", Pool: "chat"}}, nil); err != nil {
		t.Fatal(err)
	}
	if got := rt.Pool("x", "/ws"); got != "chat" {
		t.Errorf("after SetRoutes: %q", got)
	}
	if err := rt.SetRoutes([]Route{{Path: "/", Pool: ""}}, nil); err == nil || rt.Pool("x", "/") != "chat" {
		t.Errorf("a bad route replaced the good ones: %v", err)
	}
}

// TestPoolKeySources: a pool with its own key sources is keyed by them,
// the others by the router's.
func TestPoolKeySources(t *testing.T) {
	p := &poolPicker{pools: map[string][]Backend{
		"rides":     {newBackend(t, "rides-1", httpEcho("rides-1"))},
		DefaultPool: {newBackend(t, "web-1", httpEcho("web-1"))},
	}}
	_, srv := newFront(t, Config{Picker: p, Routes: []Route{{Path: "/rides", Pool: "rides"}},
		PoolKeySources: map[string]string{"rides": "query:ride_id,ip"}})
	for _, path := range []string{"/rides/x?ride_id=r42&session_id=s1", "/other?ride_id=r42&session_id=s1"} {
		r, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.asked) != 2 || p.asked[0] != "rides/r42" || p.asked[1] != "default/s1" {
		t.Fatalf("picker asked %v; want rides/r42 then default/s1", p.asked)
	}
	if _, err := New(Config{Picker: p, PoolKeySources: map[string]string{"x": "query:"}}); err == nil {
		t.Error("bad key sources of a pool accepted")
	}
}

func FuzzParseRoute(f *testing.F) {
	f.Add("host=rides.example.com,path=/ws,pool=rides")
	f.Add("host=*.example.com,pool=x")
	f.Add("path=/,pool=default")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRoute(s)
		if err != nil {
			return
		}
		again, err := ParseRoute(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRoute(%q) = %+v, but its String %q gives %+v, %v", s, r, r.String(), again, err)
		}
		rt, err := newRouteTable([]Route{r}, KeyConfig{}, nil)
		if err != nil {
			t.Fatalf("a parsed route is refused by the table: %v", err)
		}
		rt.pool(r.Host, r.Path)
	})
}
