package config

import (
	"bytes"
	"strings"
	"testing"

	"github.com/meshlb/meshlb/node"
	"github.com/meshlb/meshlb/router"
)

func TestParseBackends(t *testing.T) {
	got, err := ParseBackends("web-1=10.0.0.5:9000,weight=3, web-2=10.0.0.6:9000 ,10.0.0.7:80,weight=100,weight=10.0.0.8:80")
	if err != nil {
		t.Fatal(err)
	}
	want := []node.BackendSpec{
		{ID: "web-1", Addr: "10.0.0.5:9000", Weight: 3},
		{ID: "web-2", Addr: "10.0.0.6:9000"},
		{ID: "10.0.0.7:80", Addr: "10.0.0.7:80", Weight: 100},
		{ID: "weight", Addr: "10.0.0.8:80"}, // an address: a backend named weight
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("backend %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"a=1.2.3.4:80,colour=x", `unknown; allowed: pool, weight`},
		{"weight=3", "before any"},
		{"a=1.2.3.4:80,weight=0", "want 1 to 100"},
		{"a=1.2.3.4:80,weight=101", "want 1 to 100"},
		{"a=1.2.3.4:80,weight=x", "want an integer"},
		{"a=1.2.3.4:80,weight=2,weight=3", "given twice"},
		{"a=nohostport", "a"},
	} {
		if _, err := ParseBackends(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

// TestBackendWeightFlagAndYAML: the flag and a YAML list item take the same
// options.
func TestBackendWeightFlagAndYAML(t *testing.T) {
	file := writeFile(t, "name: n\nbackend:\n  - web-1=10.0.1.1:80,weight=4\n  - 10.0.1.2:80\n")
	ws := map[string]int{}
	for _, args := range [][]string{{"--config", file}, {"--name=n", "--backend", "x=10.0.1.3:80,weight=2"}} {
		c, err := ParseNode(args, nil, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range c.Node.Backends {
			ws[b.ID] = b.Weight
		}
	}
	if ws["x"] != 2 || ws["web-1"] != 4 || ws["10.0.1.2:80"] != 0 || len(ws) != 3 {
		t.Fatalf("backends %v", ws)
	}
}

func FuzzParseBackends(f *testing.F) {
	f.Add("web-1=10.0.0.5:9000,weight=3,web-2=[::1]:80")
	f.Add("weight=,=,,=:")
	f.Fuzz(func(t *testing.T, s string) {
		bs, err := ParseBackends(s)
		if err != nil {
			return
		}
		for _, b := range bs {
			if b.Addr == "" || b.Weight < 0 || b.Weight > 100 {
				t.Fatalf("%q gave %+v", s, b)
			}
		}
	})
}

// TestPoolsAndRoutesFlagsAndYAML: backends name their pool with ,pool= in
// the flag and in YAML; routes come as repeated --route flags, one value
// with ;, or a YAML route: list, all the same strings; bad ones name the
// option.
func TestPoolsAndRoutesFlagsAndYAML(t *testing.T) {
	file := writeFile(t, "name: n\nbackend:\n  - rides-1=10.0.1.1:80,pool=rides,weight=2\n  - 10.0.1.2:80\nroute:\n  - host=rides.example.com,path=/ws,pool=rides\n  - path=/chat,pool=chat\n")
	for _, args := range [][]string{
		{"--config", file},
		{"--name=n", "--backend", "rides-1=10.0.1.1:80,weight=2,pool=rides,10.0.1.2:80",
			"--route", "host=rides.example.com,path=/ws,pool=rides", "--route", "path=/chat,pool=chat"},
		{"--name=n", "--backend", "rides-1=10.0.1.1:80,weight=2,pool=rides,10.0.1.2:80",
			"--route", "host=rides.example.com,path=/ws,pool=rides; path=/chat,pool=chat"},
	} {
		c, err := ParseNode(args, nil, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		bs := c.Node.Backends
		if len(bs) != 2 || bs[0].Pool != "rides" || bs[0].Weight != 2 || bs[1].Pool != "" {
			t.Errorf("%v: backends %+v", args, bs)
		}
		rs := c.Node.Router.Routes
		if len(rs) != 2 || rs[0] != (router.Route{Host: "rides.example.com", Path: "/ws", Pool: "rides"}) || rs[1] != (router.Route{Path: "/chat", Pool: "chat"}) {
			t.Errorf("%v: routes %+v", args, rs)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--backend", "a=1.2.3.4:80,pool=Rides"}, "pool \"Rides\""},
		{[]string{"--backend", "a=1.2.3.4:80,pool=a,pool=b"}, "given twice"},
		{[]string{"--route", "path=/ws"}, "--route"},
		{[]string{"--route", "path=/ws,pool=Bad"}, "pool \"Bad\""},
		{[]string{"--route", "host=a:80,pool=x"}, "host"},
		{[]string{"--route", "path=/a,pool=x", "--route", "path=/a,pool=y"}, "the same host and path twice"},
	} {
		_, err := ParseNode(append([]string{"--name=n"}, tc.args...), nil, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestPoolOptions: a pool's own key sources and health path, as NAME=VALUE
// with commas in VALUE; bad ones name the option.
func TestPoolOptions(t *testing.T) {
	c, err := ParseNode([]string{"--name=n", "--pool-route-key", "rides=query:ride_id,ip", "--pool-route-key", "chat=header:X-Room",
		"--pool-health-http", "chat=/status", "--pool-health-http", "rides="}, nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if k := c.Node.Router.PoolKeySources; len(k) != 2 || k["rides"] != "query:ride_id,ip" || k["chat"] != "header:X-Room" {
		t.Errorf("pool key sources %v", k)
	}
	if h := c.Node.HealthCheck.PoolHTTPPath; len(h) != 2 || h["chat"] != "/status" || h["rides"] != "" {
		t.Errorf("pool health paths %v", h)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--pool-route-key", "rides"}, "NAME=VALUE"},
		{[]string{"--pool-route-key", "Rides=ip"}, "pool \"Rides\""},
		{[]string{"--pool-route-key", "rides="}, "NAME=SOURCES"},
		{[]string{"--pool-route-key", "rides=query:"}, "--pool-route-key rides=query:"},
		{[]string{"--pool-health-http", "chat=status"}, "absolute path"},
	} {
		_, err := ParseNode(append([]string{"--name=n"}, tc.args...), nil, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}
