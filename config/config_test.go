package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/health"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meshlb.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedenceFlagsEnvFile(t *testing.T) {
	file := writeFile(t, `
name: from-file
listen: 127.0.0.1:1111
admin: 127.0.0.1:2222
join: [10.0.0.1:7946, 10.0.0.2:7946]
backend:
  - web-1=10.0.1.1:80
  - 10.0.1.2:80
ring:
  seed: s3cret
  partitions: 4099
log-level: warn
`)
	env := []string{"MESHLB_LISTEN=127.0.0.1:3333", "MESHLB_CONFIG=" + file, "PATH=/bin"}
	c, err := ParseNode([]string{"--name", "from-flag"}, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	n := c.Node
	if n.Name != "from-flag" {
		t.Errorf("name = %q; want the flag's", n.Name)
	}
	if n.ListenAddr != "127.0.0.1:3333" {
		t.Errorf("listen = %q; want the environment's", n.ListenAddr)
	}
	if n.AdminAddr != "127.0.0.1:2222" {
		t.Errorf("admin = %q; want the file's", n.AdminAddr)
	}
	if n.Gossip.BindAddr != "0.0.0.0:7946" {
		t.Errorf("gossip-addr = %q; want the default", n.Gossip.BindAddr)
	}
	if got := strings.Join(n.Gossip.Seeds, ","); got != "10.0.0.1:7946,10.0.0.2:7946" {
		t.Errorf("join = %q", got)
	}
	if len(n.Backends) != 2 || n.Backends[0].ID != "web-1" || n.Backends[1].ID != "10.0.1.2:80" {
		t.Errorf("backends = %+v", n.Backends)
	}
	if n.Ring.Seed != "s3cret" || n.Ring.Partitions != 4099 {
		t.Errorf("ring = %+v", n.Ring)
	}
	if c.LogLevel != zerolog.WarnLevel {
		t.Errorf("log level = %v; want warn", c.LogLevel)
	}
}

func TestRepeatedAndCommaSeparated(t *testing.T) {
	c, err := ParseNode([]string{"--name=a", "--backend", "a=1.2.3.4:80,b=1.2.3.5:80", "--backend", "c=[::1]:80", "--join", "x:1,y:2"}, nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Node.Backends) != 3 || c.Node.Backends[2].Addr != "[::1]:80" {
		t.Errorf("backends = %+v", c.Node.Backends)
	}
	if len(c.Node.Gossip.Seeds) != 2 {
		t.Errorf("seeds = %v", c.Node.Gossip.Seeds)
	}
}

func TestGossipKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"MDEyMzQ1Njc4OWFiY2RlZg==", true},                     // 16 bytes
		{"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", true}, // 32 bytes
		{"c2hvcnQ=", false},                                    // 5 bytes
		{"not base64!", false},
	} {
		_, err := ParseNode([]string{"--name=a", "--gossip-key", tc.key}, nil, &bytes.Buffer{})
		if (err == nil) != tc.ok {
			t.Errorf("key %q: err = %v; want ok=%v", tc.key, err, tc.ok)
		}
	}
}

// Every bad input is a UsageError (exit 2) whose message names the option
// and where the value came from.
func TestErrorsNameTheOption(t *testing.T) {
	file := writeFile(t, "listen: 127.0.0.1:1\nbogus: 1\n")
	bad := writeFile(t, "ring:\n  load: heavy\n")
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, nil, "nope"},
		{"bad port", []string{"--listen", "127.0.0.1:http"}, nil, "--listen"},
		{"no port", []string{"--admin", "localhost"}, nil, "--admin"},
		{"bad backend", []string{"--backend", "x=nohostport"}, nil, "--backend"},
		{"bad env", nil, []string{"MESHLB_RING_PARTITIONS=-3"}, "MESHLB_RING_PARTITIONS"},
		{"unknown env", nil, []string{"MESHLB_LISTN=:1"}, "MESHLB_LISTN"},
		{"unknown key", []string{"--config", file}, nil, `"bogus"`},
		{"bad nested value", []string{"--config", bad}, nil, "ring-load"},
		{"missing file", []string{"--config", "/nonexistent/x.yaml"}, nil, "/nonexistent/x.yaml"},
		{"positional", []string{"extra"}, nil, "extra"},
		{"bad level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"bad quorum", []string{"--health-quorum", "most"}, nil, "--health-quorum"},
		{"eject 150", []string{"--max-eject-percent", "150"}, nil, "--max-eject-percent"},
		{"relative path", []string{"--health-http", "healthz"}, nil, "--health-http"},
		{"bad status", []string{"--health-http-status", "500-200"}, nil, "--health-http-status"},
		{"rise 0", nil, []string{"MESHLB_HEALTH_RISE=0"}, "MESHLB_HEALTH_RISE"},
		{"hold above max", []string{"--health-hold", "10m"}, nil, "--health-hold"},
		{"frame size 0", []string{"--ws-max-frame-size", "0"}, nil, "--ws-max-frame-size"},
		{"frame size unit", []string{"--ws-max-frame-size", "64M"}, nil, "--ws-max-frame-size"},
		{"write timeout 0", nil, []string{"MESHLB_WS_WRITE_TIMEOUT=0s"}, "MESHLB_WS_WRITE_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNode(tc.args, tc.env, &bytes.Buffer{})
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v; want a UsageError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q; want it to name %q", err, tc.want)
			}
		})
	}
}

// TestHealthOptions: the health flags reach the node config, nested YAML
// included (health: {interval: ...} is health-interval).
func TestHealthOptions(t *testing.T) {
	file := writeFile(t, `
health:
  interval: 2s
  http: /healthz
  http-status: 200-299
  quorum: all
max-eject-percent: 0
`)
	c, err := ParseNode([]string{"--name", "a", "--config", file, "--health-rise", "3", "--health-hold", "30s"}, nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	h, p := c.Node.HealthCheck, c.Node.HealthPolicy
	if h.Interval != 2*time.Second || h.Timeout != 500*time.Millisecond || h.Rise != 3 || h.Fall != 2 ||
		h.HTTPPath != "/healthz" || h.StatusMin != 200 || h.StatusMax != 299 {
		t.Errorf("checks = %+v", h)
	}
	if p.Quorum != -1 || p.MaxEjectPercent != health.NoEjection || p.HoldBase != 30*time.Second || p.HoldMax != 5*time.Minute || p.FlapThreshold != 3 {
		t.Errorf("policy = %+v", p)
	}
	c, err = ParseNode([]string{"--name", "a", "--health-quorum", "2"}, nil, &bytes.Buffer{})
	if err != nil || c.Node.HealthPolicy.Quorum != 2 || c.Node.HealthPolicy.MaxEjectPercent != 50 {
		t.Errorf("quorum 2: %+v, %v", c.Node.HealthPolicy, err)
	}
}

// TestWriteTimeoutsAndFrameSize: the relay's hardening options have their
// defaults, and each source reaches the router config.
func TestWriteTimeoutsAndFrameSize(t *testing.T) {
	c, err := ParseNode([]string{"--name", "a"}, nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r := c.Node.Router
	if r.WSWriteTimeout != 30*time.Second || r.WSMaxFrameSize != 64<<20 || r.HTTPWriteTimeout != time.Minute {
		t.Errorf("defaults: ws write %v, frame %d, http write %v; want 30s, 64 MiB, 1m", r.WSWriteTimeout, r.WSMaxFrameSize, r.HTTPWriteTimeout)
	}
	file := writeFile(t, "http-write-timeout: 2m\n")
	c, err = ParseNode([]string{"--name", "a", "--config", file, "--ws-max-frame-size", "1048576"},
		[]string{"MESHLB_WS_WRITE_TIMEOUT=5s"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r = c.Node.Router
	if r.WSWriteTimeout != 5*time.Second || r.WSMaxFrameSize != 1<<20 || r.HTTPWriteTimeout != 2*time.Minute {
		t.Errorf("set: ws write %v, frame %d, http write %v; want 5s, 1 MiB, 2m", r.WSWriteTimeout, r.WSMaxFrameSize, r.HTTPWriteTimeout)
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := ParseNode([]string{"--help"}, nil, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v; want flag.ErrHelp", err)
	}
	for _, o := range nodeOptions() {
		if !strings.Contains(out.String(), "--"+o.name) {
			t.Errorf("help does not mention --%s", o.name)
		}
	}
}

func FuzzParseYAML(f *testing.F) {
	for _, s := range []string{"", "name: a\n", "ring:\n  seed: x\n", "backend: [a=b:1, c:2]\n", "- 1\n", "a: {b: {c: {d: 1}}}\n", "&a [*a]\n", "name: !!binary aGk=\n"} {
		f.Add([]byte(s))
	}
	known := map[string]bool{}
	for _, o := range nodeOptions() {
		known[EnvName(o.name)] = true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := ParseYAML(b, known)
		if err != nil {
			return
		}
		for k := range out {
			if !known[EnvName(k)] {
				t.Fatalf("accepted unknown key %q", k)
			}
		}
	})
}

func TestMaxConnsAndBackendNetworks(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want int
	}{
		{nil, 0},                          // auto: the node derives it
		{[]string{"--max-conns=auto"}, 0}, // the same, said
		{[]string{"--max-conns=0"}, -1},   // unlimited
		{[]string{"--max-conns=500"}, 500},
	} {
		c, err := ParseNode(append([]string{"--name=a"}, tt.args...), nil, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if got := c.Node.Router.MaxConns; got != tt.want {
			t.Errorf("%v: Router.MaxConns = %d; want %d", tt.args, got, tt.want)
		}
	}
	if _, err := ParseNode([]string{"--name=a", "--max-conns=-3"}, nil, &bytes.Buffer{}); err == nil {
		t.Error("--max-conns=-3 accepted")
	}

	c, err := ParseNode([]string{"--name=a", "--backend-networks", "10.0.0.0/8, 2001:db8::/32,192.168.1.7/24"}, nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.Node.BackendNetworks); got != "[10.0.0.0/8 2001:db8::/32 192.168.1.0/24]" {
		t.Errorf("backend networks = %s", got)
	}
	for _, bad := range []string{"10.0.0.1", "10.0.0.0/33", "x"} {
		if _, err := ParseNode([]string{"--name=a", "--backend-networks", bad}, nil, &bytes.Buffer{}); err == nil {
			t.Errorf("--backend-networks %q accepted", bad)
		}
	}
}

// TestChanged names the options whose effective values differ, whatever
// their source, and nothing else.
func TestChanged(t *testing.T) {
	old, err := ParseNode([]string{"--name", "a", "--log-level", "info", "--backend", "b1=127.0.0.1:1"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	same, err := ParseNode([]string{"--name", "a", "--backend", "b1=127.0.0.1:1"}, []string{"MESHLB_LOG_LEVEL=info"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := Changed(old, same); len(got) != 0 {
		t.Errorf("same values from other sources: changed %v; want none", got)
	}
	next, err := ParseNode([]string{"--name", "a", "--log-level", "debug", "--backend", "b1=127.0.0.1:1", "--backend", "b2=127.0.0.1:2", "--ring-partitions", "271"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := Changed(old, next); !slices.Equal(got, []string{"backend", "ring-partitions", "log-level"}) &&
		!slices.Equal(got, []string{"ring-partitions", "backend", "log-level"}) {
		t.Errorf("changed %v; want backend, ring-partitions, log-level", got)
	}
}
