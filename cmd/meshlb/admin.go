package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshlb/meshlb/node"
)

var adminUsage = map[string]string{
	"status":   "Usage: meshlb status [--admin-url URL] [--json]\n\nShow the node's view of the mesh: members, ring, and whether every node agrees.\n",
	"route":    "Usage: meshlb route KEY [--pool NAME | --host NAME --path /PATH] [--admin-url URL] [--json]\n\nShow which backend KEY (a session ID or client IP) is routed to, in the default pool, the pool named, or the pool the routes pick for a host and path.\n",
	"backends": "Usage: meshlb backends [list | add [id=]host:port [--weight N] [--pool NAME] | drain ID [--close-sessions [--spread 30s]] | undrain ID | remove ID [--close-sessions [--spread 30s]]] [--admin-url URL] [--json]\n\nList or change the mesh-wide backend catalog through any node.\n",
	"keys":     keysUsage,
}

type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func runAdmin(cmd string, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlb "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	defURL := "http://127.0.0.1:9901"
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "MESHLB_ADMIN_URL="); ok && v != "" {
			defURL = v
		}
	}
	adminURL := fs.String("admin-url", defURL, "admin API of the node to ask (env MESHLB_ADMIN_URL)")
	asJSON := fs.Bool("json", false, "print the raw JSON answer")
	timeout := fs.Duration("timeout", 5*time.Second, "request timeout")
	tf := addTLSFlags(fs, environ)
	var weight *int
	var pool, host, reqPath *string
	var closeSessions *bool
	var spread *time.Duration
	if cmd == "backends" {
		weight = fs.Int("weight", 1, "weight of the backend added (1-100): its share of keys is proportional to it")
		closeSessions = fs.Bool("close-sessions", false, "drain or remove: also close the backend's WebSockets on every node (close code 1012), so they reconnect to their new owners")
		spread = fs.Duration("spread", 0, "with --close-sessions: spread the closes over this window, jittered (0: at once)")
		pool = fs.String("pool", "default", "add: the pool of the backend added")
	}
	if cmd == "route" {
		pool = fs.String("pool", "", "the pool whose ring to ask (default: the one the routes pick, else default)")
		host = fs.String("host", "", "a request's host name, for the routes to pick the pool")
		reqPath = fs.String("path", "", "a request's path, for the routes to pick the pool")
	}
	// A mistyped flag gets one line and a hint, not the whole help: the
	// flag package would print both.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	// Accept flags before and after the positional arguments.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stderr, adminUsage[cmd], "\nFlags:\n")
				printFlags(stderr, fs)
				return 0
			}
			fmt.Fprintf(stderr, "meshlb %s: %v (see meshlb %s --help)\n", cmd, err, cmd)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	u, err := url.Parse(*adminURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "meshlb %s: --admin-url %q is not an http(s) URL\n", cmd, *adminURL)
		return 2
	}
	if cmd == "keys" {
		*timeout = max(*timeout, keyStepTimeout) // a step waits for every node
	}
	hc, err := tf.client(*timeout)
	if err != nil {
		fmt.Fprintf(stderr, "meshlb %s: %v\n", cmd, err)
		return 2
	}
	c := adminClient{base: strings.TrimRight(*adminURL, "/"), token: tf.token(), http: hc}

	var method, path string
	var body any
	switch cmd {
	case "status":
		if len(pos) != 0 {
			return usageErr(stderr, cmd, "takes no arguments")
		}
		method, path = "GET", "/v1/status"
	case "route":
		if len(pos) != 1 {
			return usageErr(stderr, cmd, "needs exactly one KEY")
		}
		q := url.Values{"key": {pos[0]}}
		if *pool != "" && (*host != "" || *reqPath != "") {
			return usageErr(stderr, cmd, "--pool, or --host and --path for the routes to pick it, not both")
		}
		for k, v := range map[string]string{"pool": *pool, "host": *host, "path": *reqPath} {
			if v != "" {
				q.Set(k, v)
			}
		}
		method, path = "GET", "/v1/route?"+q.Encode()
	case "backends":
		sub := "list"
		if len(pos) > 0 {
			sub = pos[0]
		}
		switch {
		case sub == "list" && len(pos) <= 1:
			method, path = "GET", "/v1/backends"
		case sub == "add" && len(pos) == 2:
			spec, err := node.ParseBackendSpec(pos[1])
			if err != nil {
				return usageErr(stderr, cmd, err.Error())
			}
			method, path, body = "POST", "/v1/backends", map[string]any{"id": spec.ID, "addr": spec.Addr, "weight": *weight, "pool": *pool}
		case sub == "drain" && len(pos) == 2:
			method, path = "POST", "/v1/backends/"+url.PathEscape(pos[1])+"/drain"
		case sub == "undrain" && len(pos) == 2:
			method, path = "POST", "/v1/backends/"+url.PathEscape(pos[1])+"/undrain"
		case sub == "remove" && len(pos) == 2:
			method, path = "DELETE", "/v1/backends/"+url.PathEscape(pos[1])
		default:
			return usageErr(stderr, cmd, "expected list, add [id=]host:port, drain ID, undrain ID or remove ID")
		}
		switch {
		case *closeSessions && sub != "drain" && sub != "remove":
			return usageErr(stderr, cmd, "--close-sessions goes with drain or remove")
		case *spread != 0 && !*closeSessions:
			return usageErr(stderr, cmd, "--spread goes with --close-sessions")
		case *closeSessions:
			path += "?close_sessions=true&spread=" + url.QueryEscape(spread.String())
		}
	case "keys":
		var msg string
		if method, path, body, msg = keysRequest(pos); msg != "" {
			return usageErr(stderr, cmd, msg)
		}
	}
	raw, err := c.do(method, path, body)
	if err != nil {
		fmt.Fprintf(stderr, "meshlb %s: %v\n", cmd, err)
		return 1
	}
	if *asJSON {
		stdout.Write(raw)
		if cmd == "keys" && method != "GET" && !stepComplete(raw) {
			return 1
		}
		return 0
	}
	if err := printHuman(stdout, cmd, method != "GET", raw); err != nil {
		fmt.Fprintf(stderr, "meshlb %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func usageErr(stderr io.Writer, cmd, msg string) int {
	fmt.Fprintf(stderr, "meshlb %s: %s\n\n%s", cmd, msg, adminUsage[cmd])
	return 2
}

func (c adminClient) do(method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if method != http.MethodGet {
		// Every change must say it is JSON, body or not: the node refuses
		// anything a browser could send cross-site without asking.
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API unreachable: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return raw, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

// printHuman renders an answer for a person; changed says the answer is
// the one backend a change touched rather than a list.
func printHuman(w io.Writer, cmd string, changed bool, raw []byte) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch {
	case cmd == "keys":
		return printKeys(tw, changed, raw)
	case cmd == "status":
		var s node.Status
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		ready := "ready"
		if !s.Ready {
			ready = "not ready: " + s.Reason
		}
		fmt.Fprintf(tw, "node %s (%s)\n", s.Node, ready)
		fmt.Fprintf(tw, "ring %s: %d backends, %d partitions\n", s.Ring.Fingerprint, s.Ring.Backends, s.Ring.Partitions)
		if len(s.Ring.Pools) > 1 {
			for _, p := range s.Ring.Pools {
				fmt.Fprintf(tw, "  pool %s: ring %s, %d backends\n", p.Name, p.Fingerprint, p.Backends)
			}
		}
		if s.Ring.Error != "" {
			fmt.Fprintf(tw, "ring error: %s\n", s.Ring.Error)
		}
		fmt.Fprintf(tw, "every node has this ring: %s; same config: %s\n", yesNo(s.RingAgreed), yesNo(s.ConfigAgreed))
		h := s.Health
		fmt.Fprintf(tw, "health decided by %s: %d of at most %d backends out", h.Decider, h.Ejected, h.MaxEjected)
		if len(h.OverBudget) > 0 {
			fmt.Fprintf(tw, "; OVER BUDGET, kept in although down: %s", strings.Join(h.OverBudget, ", "))
		}
		fmt.Fprint(tw, "\n")
		if d := s.DNS; d != nil {
			fmt.Fprintf(tw, "dns %s for %s, ttl %ds: %s", d.Addr, strings.Join(d.Names, ", "), d.TTL, strings.Join(d.Answer, " "))
			if d.Stale {
				fmt.Fprint(tw, " (STALE)")
			}
			if d.Reason != "" {
				fmt.Fprintf(tw, " (%s)", d.Reason)
			}
			fmt.Fprint(tw, "\n")
		}
		if s.TLS != nil {
			printACME(tw, s.TLS.ACME)
		}
		fmt.Fprint(tw, "\n")
		fmt.Fprintln(tw, "NAME\tSTATE\tREADY\tGOSSIP\tPROXY\tADMIN\tRING\tCONFIG")
		for _, m := range s.Members {
			state := m.State
			if m.Suspect {
				state += " (suspect)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, state, yesNo(m.Ready), m.GossipAddr, m.ProxyAddr, m.AdminAddr, m.RingFingerprint, m.ConfigFingerprint)
		}
		for _, f := range s.FailedMembers {
			fmt.Fprintf(tw, "%s\tfailed %s ago\t-\t%s\t-\t-\t-\t-\n", f.Name, time.Since(f.Since).Round(time.Second), f.GossipAddr)
		}
	case cmd == "route":
		var r node.RouteAnswer
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		inPool := ""
		if r.Pool != "" && r.Pool != "default" {
			inPool = ", pool " + r.Pool
		}
		fmt.Fprintf(tw, "%s -> %s (%s), partition %d, ring %s%s\n", r.Key, r.Backend, r.Addr, r.Partition, r.Fingerprint, inPool)
	case changed:
		var b node.BackendStatus
		if err := json.Unmarshal(raw, &b); err != nil {
			return err
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", b.ID, b.Addr, b.EffectiveState, b.Reason)
	default:
		var l struct {
			Backends []node.BackendStatus `json:"backends"`
		}
		if err := json.Unmarshal(raw, &l); err != nil {
			return err
		}
		fmt.Fprintln(tw, "ID\tADDR\tSTATE\tIN RING\tSESSIONS\tDOWN VOTES\tHERE\tCHANGED\tPOOL\tREASON")
		for _, b := range l.Backends {
			votes := "-"
			if b.Health != nil && b.Health.Voters > 0 {
				votes = fmt.Sprintf("%d/%d", b.Health.DownVotes, b.Health.Voters)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", b.ID, b.Addr, b.EffectiveState, yesNo(b.InRing), b.Sessions, votes, b.LocalView,
				b.LastChange.Format(time.RFC3339), cmp.Or(b.Pool, "default"), b.Reason)
		}
	}
	return nil
}

// printACME lists the managed domains of `meshlb status`.
func printACME(w io.Writer, ds []node.ACMEDomainStatus) {
	for _, d := range ds {
		fmt.Fprintf(w, "acme %s: %s", d.Domain, d.State)
		if !d.ValidUntil.IsZero() {
			fmt.Fprintf(w, ", valid until %s", d.ValidUntil.Format(time.RFC3339))
		}
		fmt.Fprintf(w, ", ordered by %s", cmp.Or(d.Orderer, "(no live node)"))
		if d.LastError != "" {
			fmt.Fprintf(w, "; last error (%s): %s", d.LastBy, d.LastError)
		}
		fmt.Fprint(w, "\n")
	}
}
