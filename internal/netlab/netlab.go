//go:build linux

// Package netlab builds a small network of "hosts" out of Linux network
// namespaces for chaos tests: every host is a namespace with one veth
// (eth0) plugged into a bridge that lives in a namespace of its own, so
// nothing is added to the root namespace and deleting the namespaces
// removes every link, address and firewall rule.
//
// It shells out to ip(8) and nft(8) and needs root. It knows nothing of
// meshlb: integration tests and the chaos soak drive meshlb through it.
//
// A Lab is safe for use by several goroutines.
package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Available says what is missing for a Lab on this machine, or nil.
func Available() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (namespaces, veths and nftables need it)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" in PATH (apt-get install iproute2 nftables)")
		}
	}
	if sysSetns < 0 {
		missing = append(missing, "setns(2) on "+runtime.GOARCH)
	}
	if len(missing) > 0 {
		return fmt.Errorf("netlab needs %s", strings.Join(missing, ", "))
	}
	return nil
}

// Prefix returns a namespace-name prefix unique to this process and call:
// base, the process ID in hex, and a random tag. Reap recognises the form.
func Prefix(base string) string {
	return fmt.Sprintf("%s%x-%04x", base, os.Getpid(), rand.IntN(1<<16))
}

// Reap deletes the namespaces, and kills the processes in them, left by
// runs with this base prefix whose process is gone (a test binary killed
// by its timeout runs no cleanup). Namespaces of live runs are left alone.
func Reap(base string) {
	re := regexp.MustCompile("^" + regexp.QuoteMeta(base) + "([0-9a-f]+)-[0-9a-f]{4}-")
	for _, ns := range listNamespaces() {
		m := re.FindStringSubmatch(ns)
		if m == nil {
			continue
		}
		pid, err := strconv.ParseInt(m[1], 16, 64)
		if err != nil || pid == int64(os.Getpid()) {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue
		}
		deleteNamespace(ns)
	}
}

// Lab is one bridge and the hosts plugged into it.
type Lab struct {
	prefix string
	sw     string // the switch namespace

	mu    sync.Mutex
	hosts map[string]Host
	order []string
	// hostRules: hosts with an "inet chaos" table of their own.
	hostRules map[string]bool
	bridgeCut bool
}

// Host is one namespace on the bridge.
type Host struct {
	Name string // as given to AddHost; also names its bridge port
	NS   string // namespace name
	Addr string // IPv4 address on eth0 (a /24)
	Port string // its port on the bridge, in the switch namespace
}

// New creates the switch namespace and its bridge. Names of namespaces
// start with prefix (see Prefix). Close removes everything.
func New(prefix string) (*Lab, error) {
	l := &Lab{prefix: prefix, sw: prefix + "-sw", hosts: map[string]Host{}, hostRules: map[string]bool{}}
	if err := run("ip", "netns", "add", l.sw); err != nil {
		return nil, err
	}
	for _, argv := range [][]string{
		{"ip", "-n", l.sw, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", l.sw, "link", "set", "br0", "up"},
	} {
		if err := run(argv...); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// AddHost creates a namespace with eth0 at addr/24 on the bridge. The
// name must be short: the bridge port is "p" + name and interface names
// stop at 15 bytes.
func (l *Lab) AddHost(name, addr string) (Host, error) {
	port := "p" + name
	if len(port) > 15 {
		return Host{}, fmt.Errorf("add host %q: name longer than 14 bytes", name)
	}
	if net.ParseIP(addr).To4() == nil {
		return Host{}, fmt.Errorf("add host %q: %q is not an IPv4 address", name, addr)
	}
	h := Host{Name: name, NS: l.prefix + "-" + name, Addr: addr, Port: port}
	l.mu.Lock()
	if _, dup := l.hosts[name]; dup {
		l.mu.Unlock()
		return Host{}, fmt.Errorf("add host %q: exists", name)
	}
	l.hosts[name] = h
	l.order = append(l.order, name)
	l.mu.Unlock()
	if err := run("ip", "netns", "add", h.NS); err != nil {
		return Host{}, err
	}
	// The veth is created with its ends already in the two namespaces, so
	// no name is ever taken in the root namespace.
	for _, argv := range [][]string{
		{"ip", "link", "add", "eth0", "netns", h.NS, "type", "veth", "peer", "name", port, "netns", l.sw},
		{"ip", "-n", l.sw, "link", "set", port, "master", "br0", "up"},
		{"ip", "-n", h.NS, "addr", "add", addr + "/24", "dev", "eth0"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
	} {
		if err := run(argv...); err != nil {
			return Host{}, err
		}
	}
	return h, nil
}

// Host returns the host named name.
func (l *Lab) Host(name string) (Host, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.hosts[name]
	return h, ok
}

// Command returns a command that runs argv inside host's namespace.
// ip netns exec execs argv in place, so the command's process is argv's
// own: signals sent to it (SIGKILL, SIGSTOP) reach the program itself.
func (l *Lab) Command(host string, argv ...string) *exec.Cmd {
	h, _ := l.Host(host)
	return exec.Command("ip", append([]string{"netns", "exec", h.NS}, argv...)...)
}

// Partition drops, at the bridge, every frame between a host of a and a
// host of b, both ways; the hosts themselves are untouched. Heal undoes it.
func (l *Lab) Partition(a, b []string) error {
	pa, err := l.ports(a)
	if err != nil {
		return err
	}
	pb, err := l.ports(b)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.bridgeCut {
		// "fwd" is an nft keyword, so the chain is named "fw".
		if err := nft(l.sw, "add table bridge chaos",
			"add chain bridge chaos fw { type filter hook forward priority 0; policy accept; }"); err != nil {
			return err
		}
		l.bridgeCut = true
	}
	return nft(l.sw,
		fmt.Sprintf("add rule bridge chaos fw iifname { %s } oifname { %s } counter drop", pa, pb),
		fmt.Sprintf("add rule bridge chaos fw iifname { %s } oifname { %s } counter drop", pb, pa))
}

// DropInput makes host drop every packet from host from: a one-way
// partition (host's packets still reach from).
func (l *Lab) DropInput(host, from string) error {
	h, ok := l.Host(host)
	f, ok2 := l.Host(from)
	if !ok || !ok2 {
		return fmt.Errorf("drop input %s from %s: unknown host", host, from)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.hostRules[host] {
		if err := nft(h.NS, "add table inet chaos",
			"add chain inet chaos in { type filter hook input priority -10; policy accept; }"); err != nil {
			return err
		}
		l.hostRules[host] = true
	}
	return nft(h.NS, "add rule inet chaos in ip saddr "+f.Addr+" counter drop")
}

// Heal removes every partition and dropped input.
func (l *Lab) Heal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if l.bridgeCut {
		errs = append(errs, nft(l.sw, "delete table bridge chaos"))
		l.bridgeCut = false
	}
	for host := range l.hostRules {
		errs = append(errs, nft(l.hosts[host].NS, "delete table inet chaos"))
		delete(l.hostRules, host)
	}
	return errors.Join(errs...)
}

// Pids lists the processes running in host's namespace.
func (l *Lab) Pids(host string) []int {
	h, _ := l.Host(host)
	return namespacePids(h.NS)
}

// Close kills every process in the lab's namespaces and deletes them. It
// is safe to call more than once.
func (l *Lab) Close() error {
	var errs []error
	for _, ns := range listNamespaces() {
		if strings.HasPrefix(ns, l.prefix+"-") {
			errs = append(errs, deleteNamespace(ns))
		}
	}
	return errors.Join(errs...)
}

// Dialer returns a DialContext that opens connections from inside host's
// namespace, so a program in the root namespace (a test, the soak) can
// reach the lab's addresses, which have no route from outside.
func (l *Lab) Dialer(host string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	h, _ := l.Host(host)
	path := "/run/netns/" + h.NS
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// The socket belongs to the namespace of the thread that
			// creates it. This thread is moved into the host's namespace
			// and never unlocked, so Go ends it with the goroutine
			// instead of reusing it for other work.
			runtime.LockOSThread()
			f, err := os.Open(path)
			if err != nil {
				ch <- result{nil, err}
				return
			}
			_, _, e := syscall.RawSyscall(uintptr(sysSetns), f.Fd(), syscall.CLONE_NEWNET, 0)
			f.Close()
			if e != 0 {
				ch <- result{nil, fmt.Errorf("setns %s: %w", h.NS, e)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

func (l *Lab) ports(names []string) (string, error) {
	var ports []string
	for _, n := range names {
		h, ok := l.Host(n)
		if !ok {
			return "", fmt.Errorf("partition: unknown host %q", n)
		}
		ports = append(ports, strconv.Quote(h.Port))
	}
	return strings.Join(ports, ", "), nil
}

func nft(ns string, cmds ...string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

func run(argv ...string) error {
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func listNamespaces() []string {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil
	}
	var names []string
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// namespacePids lists the processes in ns, less this one: a Dialer
// goroutine may have run on the main thread, which Go cannot end, and ip
// netns pids goes by the main thread's namespace.
func namespacePids(ns string) []int {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for f := range strings.FieldsSeq(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// deleteNamespace kills what runs in ns (only processes inside it), then
// deletes it. A namespace lives on while a process holds it, so the kill
// comes first; a stopped process dies of SIGKILL too.
func deleteNamespace(ns string) error {
	for range 50 {
		pids := namespacePids(ns)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return run("ip", "netns", "del", ns)
}
