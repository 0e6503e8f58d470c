package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/meshlb/meshlb/node"
)

const keysUsage = `Usage: meshlb keys [list | install KEY | use KEY | remove KEY] [--admin-url URL] [--token T] [--json]

Rotate the gossip key of the whole mesh through any node, as serf keys does.
KEY is the base64 of a 16, 24 or 32-byte key (e.g. head -c 32 /dev/urandom |
base64), or - to read it from stdin (a key on the command line shows in ps).
Each step is carried to every live node and the answer says which
acknowledged it; the command exits 1 unless all did. Rotate in this order,
each step everywhere before the next: install the new key, use it, remove the
old one. use refuses while a live node lacks the key; remove refuses a key in
use. Needs a write token.
`

// keyStepTimeout covers the node's wait for every acknowledgement (15 s).
const keyStepTimeout = 20 * time.Second

func keysRequest(pos []string) (method, path string, body any, msg string) {
	sub := "list"
	if len(pos) > 0 {
		sub = pos[0]
	}
	switch {
	case sub == "list" && len(pos) <= 1:
		return "GET", "/v1/keys", nil, ""
	case (sub == "install" || sub == "use" || sub == "remove") && len(pos) == 2:
		if pos[1] == "-" {
			// From stdin: a key on the command line shows in ps.
			b, _ := io.ReadAll(io.LimitReader(os.Stdin, 1024))
			pos[1] = strings.TrimSpace(string(b))
		}
		k, err := base64.StdEncoding.DecodeString(pos[1])
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return "", "", nil, "KEY must be the base64 of 16, 24 or 32 bytes"
		}
		return "POST", "/v1/keys", map[string]string{"op": sub, "key": pos[1]}, ""
	}
	return "", "", nil, "expected list, install KEY, use KEY or remove KEY"
}

// errIncomplete makes a key step that not every node acknowledged exit 1.
var errIncomplete = errors.New("not every live node acknowledged the step")

// stepComplete reports whether a key step's answer says every live node
// acknowledged it.
func stepComplete(raw []byte) bool {
	var a node.KeyStepAnswer
	return json.Unmarshal(raw, &a) == nil && a.Complete
}

func printKeys(w io.Writer, step bool, raw []byte) error {
	if step {
		var a node.KeyStepAnswer
		if err := json.Unmarshal(raw, &a); err != nil {
			return err
		}
		total := len(a.Acked) + len(a.Missing)
		fmt.Fprintf(w, "%s key %s: acknowledged by %d/%d nodes in %s\n", a.Op, a.KeyID, len(a.Acked), total, a.Duration)
		if len(a.Missing) > 0 {
			fmt.Fprintf(w, "not acknowledged by: %s\n", strings.Join(a.Missing, ", "))
			return errIncomplete
		}
		return nil
	}
	var l node.KeysAnswer
	if err := json.Unmarshal(raw, &l); err != nil {
		return err
	}
	fmt.Fprintf(w, "%d live nodes\n\nKEY ID\tKEY\tHELD BY\tPRIMARY ON\tMISSING ON\n", l.Nodes)
	for _, k := range l.Keys {
		key := k.Key
		if key == "" {
			key = "(not held here)"
		}
		fmt.Fprintf(w, "%s\t%s\t%d/%d\t%d/%d\t%s\n", k.KeyID, key, k.HeldBy, l.Nodes, k.PrimaryOn, l.Nodes, strings.Join(k.Missing, ","))
	}
	return nil
}

// tlsFlags are the admin client's credentials: a bearer token and, for
// https, a CA to trust and a client certificate.
type tlsFlags struct {
	tok, cacert, cert, key *string
	envToken               string
}

func addTLSFlags(fs *flag.FlagSet, environ []string) *tlsFlags {
	t := &tlsFlags{}
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "MESHLB_ADMIN_TOKEN="); ok {
			t.envToken = v
		}
	}
	t.tok = fs.String("token", "", "admin bearer token (default $MESHLB_ADMIN_TOKEN, which keeps it out of the process list)")
	t.cacert = fs.String("cacert", "", "PEM CA to verify an https admin API with (default: the system's)")
	t.cert = fs.String("cert", "", "PEM client certificate for an admin API that wants one (with --key)")
	t.key = fs.String("key", "", "PEM private key of --cert")
	return t
}

func (t *tlsFlags) token() string {
	if *t.tok != "" {
		return *t.tok
	}
	return strings.TrimSpace(t.envToken)
}

func (t *tlsFlags) client(timeout time.Duration) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if *t.cacert != "" {
		pem, err := os.ReadFile(*t.cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", *t.cacert)
		}
		tc.RootCAs = pool
	}
	if (*t.cert == "") != (*t.key == "") {
		return nil, errors.New("--cert and --key go together")
	}
	if *t.cert != "" {
		c, err := tls.LoadX509KeyPair(*t.cert, *t.key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = nil // the admin API is never reached through the environment's proxy
	return &http.Client{Timeout: timeout, Transport: tr}, nil
}
