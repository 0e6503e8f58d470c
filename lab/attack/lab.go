//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
)

// The lab's backend IDs; cleanup removes every other one.
const (
	echoID    = "echo"
	hostileID = "hostile"
)

// lab is the processes and backends one campaign or soak runs against.
type lab struct {
	o        options
	dir      string
	gossipK  string
	nodes    []*node
	echoes   []*child
	echoAddr []string
	hostile  *hostile
	legit    *legit
	control  *legit // the same load straight to the echo backend: what the machine does to a p99
	echoKey  string // a routing key n0 sends to the echo backend
	hKey     string // one it sends to the hostile backend
	stuck    int    // backends a class added that the admin API can't remove
	mu       sync.Mutex
	children []*child
}

// labSpec says what startLab builds.
type labSpec struct {
	nodes   int
	echoes  int
	hostile bool
	nofile  int // fds the lab needs in this process and in each node
	soak    bool
}

// child is a process the lab started, in its own process group.
type child struct {
	name    string
	args    []string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
}

// node is one meshlb node and its addresses.
type node struct {
	*child
	proxy, admin, gossip string
}

func startLab(ctx context.Context, o options, spec labSpec, stderr io.Writer) (*lab, error) {
	l := &lab{o: o}
	if err := raiseNofile(spec.nofile); err != nil {
		return l, err
	}
	var err error
	l.dir = o.logs
	if l.dir == "" {
		l.dir, err = os.MkdirTemp("", "meshlb-attack")
	} else {
		err = os.MkdirAll(l.dir, 0o755)
	}
	if err != nil {
		return l, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	l.gossipK = base64.StdEncoding.EncodeToString(key)

	if spec.echoes < 1 {
		spec.echoes = 1
	}
	for i := range spec.echoes {
		id := echoID
		if spec.echoes > 1 {
			id = fmt.Sprintf("echo-%d", i)
		}
		c, addr, err := l.startEcho(ctx, id, "127.0.0.1:0")
		if err != nil {
			return l, err
		}
		l.echoes = append(l.echoes, c)
		l.echoAddr = append(l.echoAddr, addr)
	}
	backends := []string{}
	for i, a := range l.echoAddr {
		id := echoID
		if spec.echoes > 1 {
			id = fmt.Sprintf("echo-%d", i)
		}
		backends = append(backends, "--backend", id+"="+a)
	}
	if spec.hostile {
		l.hostile, err = startHostile()
		if err != nil {
			return l, err
		}
		backends = append(backends, "--backend", hostileID+"="+l.hostile.addr())
	}
	for i := range spec.nodes {
		args := []string{"node", "--name", fmt.Sprintf("n%d", i), "--log-format", "json", "--log-level", "info",
			"--gossip-addr", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
			"--gossip-key", l.gossipK, "--handshake-timeout", o.handshakeTimeout.String(), "--drain-delay", "0"}
		if spec.soak {
			// The soak saves n0's heap profiles, to name what grew.
			args = append(args, "--pprof")
		}
		if i > 0 {
			args = append(args, "--join", l.nodes[0].gossip)
		}
		args = append(args, backends...)
		n, err := l.startNode(ctx, fmt.Sprintf("n%d", i), args)
		if err != nil {
			return l, err
		}
		l.nodes = append(l.nodes, n)
	}
	want := len(l.echoAddr)
	if spec.hostile {
		want++
	}
	for _, n := range l.nodes {
		if err := waitRing(ctx, n.admin, want, 90*time.Second); err != nil {
			return l, fmt.Errorf("%s: %w (log %s)", n.name, err, n.logPath)
		}
	}
	n0 := l.nodes[0]
	if l.echoKey, err = keyFor(n0.admin, echoID); err != nil && !spec.soak {
		return l, err
	}
	if spec.hostile {
		if l.hKey, err = keyFor(n0.admin, hostileID); err != nil {
			return l, err
		}
	}
	if !spec.soak {
		l.legit, err = startLegit(ctx, func(int) string { return "ws://" + n0.proxy + "/legit?session_id=" + l.echoKey }, o.legitConns, 10*time.Millisecond)
		if err != nil {
			return l, fmt.Errorf("legit load: %w", err)
		}
		l.control, err = startLegit(ctx, func(int) string { return "ws://" + l.echoAddr[0] + "/control" }, max(1, o.legitConns/4), 10*time.Millisecond)
		if err != nil {
			return l, fmt.Errorf("control load: %w", err)
		}
	}
	fmt.Fprintf(stderr, "attack: lab up: %d nodes (n0 proxy %s admin %s gossip %s), echo %v, logs in %s\n",
		len(l.nodes), n0.proxy, n0.admin, n0.gossip, l.echoAddr, l.dir)
	return l, nil
}

// raiseNofile lifts this process's RLIMIT_NOFILE (children inherit it) to
// at least need: as root past the hard limit, up to fs.nr_open.
func raiseNofile(need int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Max < uint64(need) {
		want := syscall.Rlimit{Cur: uint64(need), Max: uint64(need)}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			return nil
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < uint64(need) {
		return errSkip{fmt.Sprintf("RLIMIT_NOFILE hard limit %d < %d needed, and it can't be raised here (CAP_SYS_RESOURCE): at most --stall-sessions %d",
			lim.Cur, need, (int(lim.Cur)-512)/2)}
	}
	return nil
}

// start runs the meshlb binary with args in its own process group (so a
// Ctrl-C at the terminal reaches only us, and stop reaches its children),
// logging to a file, and waits for its startup line.
func (l *lab) start(ctx context.Context, name string, args []string) (*child, map[string]any, error) {
	c := &child{name: name, args: args, logPath: filepath.Join(l.dir, name+".log"), exited: make(chan struct{})}
	f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	c.cmd = exec.Command(l.o.meshlb, args...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	c.cmd.Stderr = pw
	if err := c.cmd.Start(); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	l.mu.Lock()
	l.children = append(l.children, c)
	l.mu.Unlock()
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			f.Write(append(sc.Bytes(), '\n'))
			if bytes.Contains(sc.Bytes(), []byte(`"node started"`)) || bytes.Contains(sc.Bytes(), []byte(`"echo backend started"`)) {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) == nil {
					select {
					case started <- m:
					default:
					}
				}
			}
		}
		io.Copy(f, pr)
		f.Close()
	}()
	go func() {
		c.cmd.Wait()
		pw.Close()
		close(c.exited)
	}()
	select {
	case m := <-started:
		return c, m, nil
	case <-c.exited:
		return nil, nil, fmt.Errorf("%s exited at start (log %s)", name, c.logPath)
	case <-time.After(30 * time.Second):
		return nil, nil, fmt.Errorf("%s did not start in 30s (log %s)", name, c.logPath)
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

func (l *lab) startNode(ctx context.Context, name string, args []string) (*node, error) {
	c, m, err := l.start(ctx, name, args)
	if err != nil {
		return nil, err
	}
	s := func(k string) string { v, _ := m[k].(string); return v }
	return &node{child: c, proxy: s("proxy_addr"), admin: s("admin_addr"), gossip: s("gossip_addr")}, nil
}

func (l *lab) startEcho(ctx context.Context, id, listen string) (*child, string, error) {
	c, m, err := l.start(ctx, id, []string{"echo", "--id", id, "--listen", listen})
	if err != nil {
		return nil, "", err
	}
	addr, _ := m["addr"].(string)
	return c, addr, nil
}

// restartNode starts n again with the same flags: its addresses were
// given as :0, so they are fixed to the ones it had.
func (l *lab) restartNode(ctx context.Context, n *node) (*node, error) {
	args := slices.Clone(n.args)
	for i := range args {
		switch args[i] {
		case "--gossip-addr":
			args[i+1] = n.gossip
		case "--listen":
			args[i+1] = n.proxy
		case "--admin":
			args[i+1] = n.admin
		}
	}
	return l.startNode(ctx, n.name, args)
}

// kill sends SIGKILL to c's process group and waits for it.
func (c *child) kill() {
	syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
	}
}

// stop kills every child and closes the hostile backend. Safe to call
// more than once and on a lab that did not finish starting.
func (l *lab) stop() {
	if l.legit != nil {
		l.legit.stop()
	}
	if l.control != nil {
		l.control.stop()
	}
	l.mu.Lock()
	cs := slices.Clone(l.children)
	l.mu.Unlock()
	for _, c := range cs {
		c.kill()
	}
	if l.hostile != nil {
		l.hostile.close()
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) logSize() int64 {
	st, err := os.Stat(c.logPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// alive reports whether n0 runs and answers /healthz.
func (l *lab) alive() bool {
	n0 := l.nodes[0]
	select {
	case <-n0.exited:
		return false
	default:
	}
	for range 5 {
		if code, _ := httpStatus("http://" + n0.admin + "/healthz"); code == 200 {
			return true
		}
		time.Sleep(time.Second)
	}
	return false
}

// usage is a node's resource figures.
type usage struct {
	RSSKiB     int64 `json:"rss_kib"`
	Threads    int   `json:"threads"`
	FDs        int   `json:"fds"`
	Goroutines int   `json:"goroutines"`
	// HeapKiB is the Go heap in use (go_memstats_heap_inuse_bytes): RSS
	// less what the runtime holds free or has not yet returned.
	HeapKiB int64 `json:"heap_kib"`
	// RSS in anonymous memory and in file pages (the binary's code and
	// data as they are first touched): a growth in file pages is code
	// paths run for the first time, not memory kept.
	AnonKiB int64 `json:"rss_anon_kib"`
	FileKiB int64 `json:"rss_file_kib"`
}

func (n *node) usage() usage {
	u := procUsage(n.pid())
	if m, err := metrics(n.admin); err == nil {
		u.Goroutines = int(m["go_goroutines"])
		u.HeapKiB = int64(m["go_memstats_heap_inuse_bytes"] / 1024)
	}
	return u
}

// procUsage reads VmRSS and Threads from /proc/PID/status and counts
// /proc/PID/fd.
func procUsage(pid int) usage {
	var u usage
	u.RSSKiB = readRSS(pid)
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				u.Threads, _ = strconv.Atoi(strings.TrimSpace(v))
			}
			if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
				u.AnonKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
			if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
				u.FileKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		u.FDs = len(ents)
	}
	return u
}

// peak samples a node's /proc figures every 200 ms until stop.
type peak struct {
	done chan struct{}
	out  chan usage
}

func startPeak(n *node) *peak {
	p := &peak{done: make(chan struct{}), out: make(chan usage, 1)}
	go func() {
		var m usage
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			u := procUsage(n.pid())
			m.RSSKiB, m.Threads, m.FDs = max(m.RSSKiB, u.RSSKiB), max(m.Threads, u.Threads), max(m.FDs, u.FDs)
			select {
			case <-p.done:
				p.out <- m
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *peak) stop() usage { close(p.done); return <-p.out }

// admin calls a node's admin API and returns the status and body.
func admin(method, adminAddr, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+adminAddr+path, body)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json") // the admin API takes no other for a change
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b, nil
}

// keyFor finds a routing key that the ring sends to backend id.
func keyFor(adminAddr, id string) (string, error) {
	for i := range 5000 {
		k := fmt.Sprintf("atk-%d", i)
		code, body, err := admin("GET", adminAddr, "/v1/route?key="+k, nil)
		if err != nil {
			return "", err
		}
		var a struct{ Backend string }
		if code == 200 && json.Unmarshal(body, &a) == nil && a.Backend == id {
			return k, nil
		}
	}
	return "", fmt.Errorf("no key of 5000 routes to backend %s", id)
}

// ringBackends reads meshlb_ring_backends from a node's /metrics.
func ringBackends(adminAddr string) float64 {
	m, _ := metrics(adminAddr)
	return m["meshlb_ring_backends"]
}

func waitRing(ctx context.Context, adminAddr string, want int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		ok, code, n := ready(adminAddr, want)
		if ok {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not ready with %d backends in %v (readyz %d, %v backends)", want, d, code, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cleanup removes every backend a class added (through n0's admin API)
// and waits until n0's ring holds only the lab's own again. A backend the
// API took but cannot remove (an ID such as "..", which the admin mux
// cleans out of the path) stays: then the ring keeps it, and the keys
// that send traffic to the echo and hostile backends are looked up again.
func (l *lab) cleanup(ctx context.Context) {
	n0 := l.nodes[0]
	_, body, err := admin("GET", n0.admin, "/v1/backends", nil)
	if err != nil {
		return
	}
	var list struct {
		Backends []struct {
			ID             string `json:"id"`
			EffectiveState string `json:"effective_state"`
		} `json:"backends"`
	}
	json.Unmarshal(body, &list)
	want := 1
	if l.hostile != nil {
		want = 2
	}
	stuck := 0
	for _, b := range list.Backends {
		if b.ID == echoID || b.ID == hostileID || b.EffectiveState == "removed" {
			continue
		}
		code, _, _ := admin("DELETE", n0.admin, "/v1/backends/"+url.PathEscape(b.ID), nil)
		if code/100 != 2 {
			stuck++
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for ringBackends(n0.admin) > float64(want+stuck) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}
	if stuck > 0 {
		l.stuck = stuck
		if k, err := keyFor(n0.admin, echoID); err == nil {
			l.echoKey = k
		}
		if l.hostile != nil {
			if k, err := keyFor(n0.admin, hostileID); err == nil {
				l.hKey = k
			}
		}
	}
}

// tally counts the outcomes of a class's tries; safe for concurrent use.
type tally struct {
	mu      sync.Mutex
	m       map[string]int
	n, good int
	// A class that holds its tries open takes the legit load's window
	// when they are all open (ramp) and at the end of the hold (held),
	// so that the service while held is judged on its own.
	ramp, held *window
	// rampControl and heldControl are the control load's windows over
	// the same spans: what the machine did to a p99 meanwhile.
	rampControl, heldControl *window
}

func newTally() *tally { return &tally{m: map[string]int{}} }

// add counts one try whose outcome reads label; it got the expected answer
// when good.
func (t *tally) add(label string, good bool) {
	t.mu.Lock()
	t.m[label]++
	t.n++
	if good {
		t.good++
	}
	t.mu.Unlock()
}

// note counts a figure that is not a try (a side observation).
func (t *tally) note(label string, n int) {
	t.mu.Lock()
	t.m[label] += n
	t.mu.Unlock()
}

func (t *tally) tries() int { t.mu.Lock(); defer t.mu.Unlock(); return t.n }

func (t *tally) counts() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.m))
	for k, v := range t.m {
		out[k] = v
	}
	return out
}

func (t *tally) expected() (good, bad int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.good, t.n - t.good
}

// parallel runs f(i) for i in [0, n), conc at a time, until ctx ends.
func parallel(ctx context.Context, n, conc int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// src is the k-th client source address, 127.0.0.2..127.0.0.254, so that
// 10,000 sessions don't run one address out of ephemeral ports.
func src(k int) net.IP { return net.IPv4(127, 0, 0, byte(2+k%253)) }

// dial opens a TCP connection to addr from src(k); rcvbuf > 0 shrinks the
// receive buffer before the handshake, so a peer that we stop reading
// from blocks after a few KiB instead of megabytes.
func dial(ctx context.Context, addr string, k, rcvbuf int) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src(k)}}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return d.DialContext(ctx, "tcp", addr)
}

// dialWS upgrades a connection from dial to a WebSocket at url.
func dialWS(ctx context.Context, rawURL string, k, rcvbuf int) (net.Conn, *bufio.Reader, error) {
	d := ws.Dialer{
		Timeout: 10 * time.Second,
		NetDial: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr, k, rcvbuf) },
	}
	c, br, _, err := d.Dial(ctx, rawURL)
	return c, br, err
}

// errLabel names an error class for the outcome counts.
func errLabel(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "ok"
	case err == io.EOF || strings.Contains(err.Error(), "EOF"):
		return "eof"
	case strings.Contains(err.Error(), "connection reset"):
		return "reset"
	case strings.Contains(err.Error(), "connection refused"):
		return "refused"
	case strings.Contains(err.Error(), "broken pipe"):
		return "broken pipe"
	case strings.Contains(err.Error(), "too many open files"):
		return "emfile"
	case asNetErr(err, &ne) && ne.Timeout():
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func asNetErr(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}
