// Package integration holds black-box tests of the meshlb binary: real
// processes on loopback, or each on a host of its own made of a network
// namespace (netns_test.go), driven through their flags, signals, admin
// API and CLI, with no access to internals.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var binary string

// Tests that mostly wait on their processes (a drain, failure detection,
// a few sessions) call t.Parallel and overlap each other and the namespace
// labs; the ones that load the machine (a thousand sessions, the chaos
// scenarios, Docker, the attack campaign) run alone, so their figures are
// not another test's.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshlb-integ")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "meshlb")
	build := exec.Command("go", "build", "-o", binary, "../cmd/meshlb")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build meshlb:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one meshlb process and what it logged.
type proc struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	mu      sync.Mutex
	log     bytes.Buffer
	started chan startedLine
	exited  chan struct{}
	err     error
}

// startedLine is the structured "node started" log line that tells where a
// node listens (it may have been given port 0).
type startedLine struct {
	Message    string `json:"message"`
	GossipAddr string `json:"gossip_addr"`
	ProxyAddr  string `json:"proxy_addr"`
	AdminAddr  string `json:"admin_addr"`
	TLSAddr    string `json:"tls_addr"` // a node's with --listen-tls
	Addr       string `json:"addr"`     // an echo backend's
}

// startNode runs `meshlb node` with args and waits for its startup line.
func startNode(t *testing.T, name string, args ...string) (*proc, startedLine) {
	t.Helper()
	p := run(t, name, append([]string{"node", "--name", name, "--log-format", "json",
		"--gossip-addr", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, args...)...)
	select {
	case s := <-p.started:
		return p, s
	case <-p.exited:
		t.Fatalf("%s exited at start: %v\n%s", name, p.err, p.output())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start\n%s", name, p.output())
	}
	return nil, startedLine{}
}

// startEcho runs `meshlb echo` and returns its address.
func startEcho(t *testing.T, id string) (*proc, string) {
	t.Helper()
	p := run(t, id, "echo", "--id", id, "--listen", "127.0.0.1:0")
	select {
	case s := <-p.started:
		return p, s.Addr
	case <-p.exited:
		t.Fatalf("echo %s exited at start: %v\n%s", id, p.err, p.output())
	case <-time.After(20 * time.Second):
		t.Fatalf("echo %s did not start\n%s", id, p.output())
	}
	return nil, ""
}

func run(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return runCmd(t, name, exec.Command(binary, args...))
}

// runCmd starts cmd (a meshlb command, perhaps behind a wrapper such as
// ip netns exec), keeps its log and kills it when the test ends.
func runCmd(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, started: make(chan startedLine, 1), exited: make(chan struct{})}
	p.cmd = cmd
	p.cmd.Env = filterEnv(os.Environ())
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.read(stderr)
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("--- %s log:\n%s", name, p.output())
		}
	})
	return p
}

// filterEnv drops MESHLB_* variables: the test decides the configuration.
func filterEnv(env []string) []string {
	out := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "MESHLB_") {
			out = append(out, kv)
		}
	}
	return out
}

func (p *proc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		p.mu.Lock()
		p.log.Write(line)
		p.log.WriteByte('\n')
		p.mu.Unlock()
		var s startedLine
		if json.Unmarshal(line, &s) == nil && (s.Message == "node started" || s.Message == "echo backend started") {
			select {
			case p.started <- s:
			default:
			}
		}
	}
	p.err = p.cmd.Wait()
	close(p.exited)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.t.Fatalf("%s still running after %v\n%s", p.name, timeout, p.output())
	}
	return p.cmd.ProcessState.ExitCode()
}

// cli runs a one-shot meshlb command and returns stdout, stderr and the exit code.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = filterEnv(os.Environ())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("meshlb %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

type status struct {
	Members []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"members"`
	Ring struct {
		Fingerprint string `json:"fingerprint"`
		Backends    int    `json:"backends"`
	} `json:"ring"`
	RingAgreed   bool `json:"ring_agreed"`
	ConfigAgreed bool `json:"config_agreed"`
}

func getStatusVia(c *http.Client, admin string) (status, error) {
	var s status
	resp, err := c.Get("http://" + admin + "/v1/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s: %s", timeout, what, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// oneRing: every admin address reports members live nodes, backends on
// the ring, and agreement on ring and config.
func oneRing(admins []string, members, backends int) func() (bool, string) {
	return oneRingVia(http.DefaultClient, admins, members, backends)
}

// oneRingVia is oneRing through c (which may dial from another network
// namespace).
func oneRingVia(c *http.Client, admins []string, members, backends int) func() (bool, string) {
	return func() (bool, string) {
		fp := ""
		for _, a := range admins {
			s, err := getStatusVia(c, a)
			switch {
			case err != nil:
				return false, err.Error()
			case len(s.Members) != members || s.Ring.Backends != backends:
				return false, fmt.Sprintf("%s: %d members, %d backends", a, len(s.Members), s.Ring.Backends)
			case !s.RingAgreed || !s.ConfigAgreed:
				return false, fmt.Sprintf("%s: ring agreed %v, config agreed %v", a, s.RingAgreed, s.ConfigAgreed)
			case fp != "" && fp != s.Ring.Fingerprint:
				return false, fmt.Sprintf("%s: ring %s, others %s", a, s.Ring.Fingerprint, fp)
			}
			fp = s.Ring.Fingerprint
		}
		return true, ""
	}
}

// httpGet returns the status and body of a GET, or 0 and the error.
func httpGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
