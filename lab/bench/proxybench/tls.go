//go:build linux

package main

// The TLS rows: meshlb beside HAProxy terminating TLS with the same ECDSA
// P-256 certificate, each as three instances in front of the same echo
// backends, as behind DNS round robin.
//
//   - full handshakes/s: --tls-handshakes fresh wss:// connections (no
//     session cache), --hs-conc at a time, to the first instance, each
//     upgraded and closed; proxy CPU per handshake (all three instances).
//   - resumed handshakes/s across instances: each client takes a session
//     from the first instance, then reconnects to the second and third
//     in turn with it; the rate, and the share that did resume. HAProxy's
//     instances each make their own ticket keys (a shared tls-ticket-keys
//     file is what it would need); meshlb's nodes share the mesh's.
//   - echo msg/s over wss: --conns WebSockets, --inflight messages of
//     --size bytes each in flight, through the first instance.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/meshlb/meshlb/lab/internal/wsload"
)

const benchSNI = "bench.test"

type tlsResult struct {
	fullRate, fullCPU     float64 // handshakes/s, µs per handshake
	resRate, resShare     float64 // handshakes/s, share resumed
	resCPU                float64 // µs per resumed handshake
	msgs, msgCPU, backCPU float64
}

type tlsTarget struct {
	name  string
	addrs []string // three instances
	procs []*wsload.Proc
	res   []tlsResult
}

// tlsFiles writes an ECDSA P-256 certificate for benchSNI: a .crt and
// .key for meshlb, and their concatenation for HAProxy.
func (b *bench) tlsFiles() (crt, key, combined string, pool *x509.CertPool, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: benchSNI},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{benchSNI}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return
	}
	cp := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kp := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	crt, key, combined = filepath.Join(b.dir, "bench.crt"), filepath.Join(b.dir, "bench.key"), filepath.Join(b.dir, "bench.pem")
	for f, data := range map[string][]byte{crt: cp, key: kp, combined: append(append([]byte{}, cp...), kp...)} {
		if err = os.WriteFile(f, data, 0o600); err != nil {
			return
		}
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return
}

// runTLS measures the TLS rows, interleaved over --runs, and prints them.
func (b *bench) runTLS() error {
	if b.dir == "" {
		var err error
		if b.dir, err = os.MkdirTemp("", "proxybench"); err != nil {
			return err
		}
		if err := b.startBackends(); err != nil {
			return err
		}
	}
	crt, key, combined, pool, err := b.tlsFiles()
	if err != nil {
		return err
	}
	var targets []*tlsTarget
	if b.o.only == "" || strings.Contains(b.o.only, "haproxy") {
		t, err := b.startHAProxyTLS(combined)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	t, err := b.startMeshTLS(crt, key)
	if err != nil {
		return err
	}
	targets = append(targets, t)
	for r := range b.o.runs {
		for i := range targets {
			t := targets[(i+r)%len(targets)]
			res, err := b.measureTLS(t, pool)
			if err != nil {
				return fmt.Errorf("%s tls run %d: %w", t.name, r+1, err)
			}
			logf("tls run %d %-7s full %.0f/s (%.0f µs CPU); resumed %.0f/s (%.0f%% resumed, %.0f µs CPU); wss echo %.0f msg/s",
				r+1, t.name, res.fullRate, res.fullCPU, res.resRate, 100*res.resShare, res.resCPU, res.msgs)
			t.res = append(t.res, res)
		}
	}
	printTLS(targets)
	return nil
}

func (b *bench) startHAProxyTLS(pemFile string) (*tlsTarget, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, fmt.Errorf("haproxy not installed (make bench installs it): %w", err)
	}
	t := &tlsTarget{name: "haproxy"}
	var servers strings.Builder
	for i, a := range b.backends {
		fmt.Fprintf(&servers, "    server web-%d %s\n", i+1, a)
	}
	for i := range 3 {
		addr, err := wsload.FreePort()
		if err != nil {
			return nil, err
		}
		cfg := fmt.Sprintf(`global
    maxconn 9900
    ulimit-n 20000
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
frontend fe
    bind %s ssl crt %s alpn http/1.1
    default_backend be
backend be
    balance url_param session_id
    hash-type consistent
%s`, addr, pemFile, servers.String())
		path := filepath.Join(b.dir, fmt.Sprintf("haproxy-tls-%d.cfg", i))
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		p, err := b.start(fmt.Sprintf("haproxy-tls-%d", i), nil, bin, "-db", "-f", path)
		if err != nil {
			return nil, err
		}
		t.addrs, t.procs = append(t.addrs, addr), append(t.procs, p)
	}
	return t, b.waitTLS(t)
}

func (b *bench) startMeshTLS(crt, key string) (*tlsTarget, error) {
	gk := make([]byte, 32)
	if _, err := rand.Read(gk); err != nil {
		return nil, err
	}
	t := &tlsTarget{name: "meshlb"}
	var first string
	var admins []string
	for i := range 3 {
		proxy, err1 := wsload.FreePort()
		tlsAddr, err2 := wsload.FreePort()
		admin, err3 := wsload.FreePort()
		gossip, err4 := wsload.FreePort()
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return nil, fmt.Errorf("free ports: %v %v %v %v", err1, err2, err3, err4)
		}
		args := []string{"node", "--name", fmt.Sprintf("t%d", i), "--gossip-addr", gossip, "--gossip-key", base64.StdEncoding.EncodeToString(gk),
			"--listen", proxy, "--listen-tls", tlsAddr, "--tls-cert", crt, "--tls-key", key,
			"--admin", admin, "--log-level", "warn", "--drain-delay", "0"}
		if first != "" {
			args = append(args, "--join", first)
		} else {
			first = gossip
		}
		for j, a := range b.backends {
			args = append(args, "--backend", fmt.Sprintf("web-%d=%s", j+1, a))
		}
		p, err := b.start(fmt.Sprintf("meshlb-tls-t%d", i), nil, b.o.meshlb, args...)
		if err != nil {
			return nil, err
		}
		t.addrs, t.procs = append(t.addrs, tlsAddr), append(t.procs, p)
		admins = append(admins, admin)
	}
	for _, admin := range admins {
		deadline := time.Now().Add(90 * time.Second)
		for {
			if ok, _, _ := wsload.Ready(admin, 3); ok {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("meshlb tls node at admin %s not ready in 90s", admin)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return t, b.waitTLS(t)
}

func (b *bench) waitTLS(t *tlsTarget) error {
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: benchSNI}
	for _, a := range t.addrs {
		deadline := time.Now().Add(20 * time.Second)
		for {
			c, _, err := dialWSS(a, "probe", 0, cfg)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s at %s: %w", t.name, a, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// dialWSS opens wss:// to addr from source 127.0.0.(2 + k%253).
func dialWSS(addr, session string, k int, cfg *tls.Config) (*tls.Conn, *bufio.Reader, error) {
	src := net.IPv4(127, 0, 0, byte(2+k%253))
	d := ws.Dialer{
		Timeout:   10 * time.Second,
		TLSConfig: cfg,
		NetDial: func(ctx context.Context, network, a string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
			return nd.DialContext(ctx, network, a)
		},
	}
	c, br, _, err := d.Dial(ctx, "wss://"+addr+"/ws?session_id="+session)
	if err != nil {
		return nil, nil, err
	}
	return c.(*tls.Conn), br, nil
}

func (b *bench) measureTLS(t *tlsTarget, pool *x509.CertPool) (tlsResult, error) {
	var r tlsResult
	pids, backends := wsload.Pids(t.procs), wsload.Pids(b.bprocs)
	n := b.o.tlsHandshakes

	// Full handshakes: no session cache.
	full := &tls.Config{RootCAs: pool, ServerName: benchSNI}
	p0 := wsload.CPUTicks(pids...)
	rate, _, err := b.parallel(n, func(i int) (bool, error) {
		c, _, err := dialWSS(t.addrs[0], fmt.Sprintf("full-%d", i), i, full)
		if err != nil {
			return false, err
		}
		c.Close()
		return false, nil
	})
	if err != nil {
		return r, fmt.Errorf("full handshakes: %w", err)
	}
	time.Sleep(500 * time.Millisecond)
	r.fullRate, r.fullCPU = rate, wsload.PerMsg(wsload.CPUTicks(pids...)-p0, float64(n))

	// Resumed across instances: a session from the first, then the
	// others in turn. One cache per client, made before the clock runs.
	caches := make([]*tls.Config, b.o.hsConc)
	for w := range caches {
		caches[w] = &tls.Config{RootCAs: pool, ServerName: benchSNI, ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		c, _, err := dialWSS(t.addrs[0], fmt.Sprintf("seed-%d", w), w, caches[w])
		if err != nil {
			return r, fmt.Errorf("seed session: %w", err)
		}
		c.Close()
	}
	// Each client goes to another instance than its last every time:
	// the second, the third, the second... (its seed came from the first).
	turn := make([]int, len(caches))
	p0 = wsload.CPUTicks(pids...)
	rate, resumed, err := b.parallelW(n, func(w, i int) (bool, error) {
		turn[w]++
		c, _, err := dialWSS(t.addrs[1+turn[w]%2], fmt.Sprintf("res-%d", i), i, caches[w])
		if err != nil {
			return false, err
		}
		// The new ticket of a TLS 1.3 resumption came before the 101,
		// which the dial has read.
		did := c.ConnectionState().DidResume
		c.Close()
		return did, nil
	})
	if err != nil {
		return r, fmt.Errorf("resumed handshakes: %w", err)
	}
	time.Sleep(500 * time.Millisecond)
	r.resRate, r.resShare, r.resCPU = rate, float64(resumed)/float64(n), wsload.PerMsg(wsload.CPUTicks(pids...)-p0, float64(n))

	// Echo over wss.
	conns := make([]wsload.Conn, 0, b.o.conns)
	for i := range b.o.conns {
		c, br, err := dialWSS(t.addrs[0], fmt.Sprintf("tp-%d", i), i, full)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return r, fmt.Errorf("echo dial: %w", err)
		}
		if br == nil {
			br = bufio.NewReaderSize(c, 32<<10)
		}
		conns = append(conns, wsload.Conn{Conn: c, R: br})
	}
	e := wsload.StartEcho(conns, b.o.inflight, b.o.size)
	time.Sleep(b.o.warmup)
	m0, t0, c0, bc0 := e.Count(), time.Now(), wsload.CPUTicks(pids...), wsload.CPUTicks(backends...)
	time.Sleep(b.o.duration)
	m1, t1, c1, bc1 := e.Count(), time.Now(), wsload.CPUTicks(pids...), wsload.CPUTicks(backends...)
	bad, err := e.Stop()
	if err != nil {
		return r, fmt.Errorf("echo: %w", err)
	}
	if bad > 0 || m1 == m0 {
		return r, fmt.Errorf("echo: %d bad, %d echoed", bad, m1-m0)
	}
	msgs := float64(m1 - m0)
	r.msgs, r.msgCPU, r.backCPU = msgs/t1.Sub(t0).Seconds(), wsload.PerMsg(c1-c0, msgs), wsload.PerMsg(bc1-bc0, msgs)
	time.Sleep(500 * time.Millisecond)
	return r, nil
}

// parallel runs f for i in [0, n), --hs-conc at a time, and returns the
// rate and how many returned true.
func (b *bench) parallel(n int, f func(i int) (bool, error)) (float64, int, error) {
	return b.parallelW(n, func(_, i int) (bool, error) { return f(i) })
}

func (b *bench) parallelW(n int, f func(w, i int) (bool, error)) (float64, int, error) {
	var next, yes atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range b.o.hsConc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				ok, err := f(w, i)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if ok {
					yes.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if e, _ := firstErr.Load().(error); e != nil {
		return 0, 0, e
	}
	return float64(n) / time.Since(t0).Seconds(), int(yes.Load()), nil
}

func printTLS(targets []*tlsTarget) {
	med := func(t *tlsTarget, f func(tlsResult) float64) float64 {
		xs := make([]float64, len(t.res))
		for i, r := range t.res {
			xs[i] = f(r)
		}
		return wsload.Median(xs)
	}
	fmt.Println()
	fmt.Println("TLS (ECDSA P-256, 3 instances each; medians):")
	fmt.Printf("| figure |")
	for _, t := range targets {
		fmt.Printf(" %s |", t.name)
	}
	fmt.Println()
	fmt.Printf("|---|")
	for range targets {
		fmt.Printf("---|")
	}
	fmt.Println()
	rows := []struct {
		name string
		f    func(tlsResult) float64
		unit string
	}{
		{"full handshakes/s (wss, upgrade + close)", func(r tlsResult) float64 { return r.fullRate }, ""},
		{"proxy CPU per full handshake", func(r tlsResult) float64 { return r.fullCPU }, " µs"},
		{"resumed handshakes/s through another instance", func(r tlsResult) float64 { return r.resRate }, ""},
		{"share of those reconnects that resumed", func(r tlsResult) float64 { return 100 * r.resShare }, " %"},
		{"proxy CPU per reconnect through another instance", func(r tlsResult) float64 { return r.resCPU }, " µs"},
		{"echo msg/s over wss (64 B)", func(r tlsResult) float64 { return r.msgs }, ""},
		{"proxy CPU per wss message", func(r tlsResult) float64 { return r.msgCPU }, " µs"},
	}
	for _, row := range rows {
		fmt.Printf("| %s |", row.name)
		for _, t := range targets {
			fmt.Printf(" %s%s |", wsload.Num(med(t, row.f)), row.unit)
		}
		fmt.Println()
	}
}
