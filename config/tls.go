package config

import (
	"errors"
	"time"
)

// tlsOptions are the TLS listener's options (node.TLSConfig).
func tlsOptions() []option {
	return []option{
		{name: "listen-tls", usage: "host:port of the TLS proxy listener (wss://, https://), beside --listen", apply: hostPort(func(c *Node, v string) { c.Node.TLS.Addr = v })},
		{name: "tls-cert", list: true, usage: "certificate file (PEM, leaf then chain); repeat, each with its --tls-key in the same order; the first is the default", apply: nonEmpty(func(c *Node, v string) { c.Node.TLS.CertFiles = append(c.Node.TLS.CertFiles, v) })},
		{name: "tls-key", list: true, usage: "private key file (PEM) of the --tls-cert at the same position", apply: nonEmpty(func(c *Node, v string) { c.Node.TLS.KeyFiles = append(c.Node.TLS.KeyFiles, v) })},
		{name: "tls-dir", usage: "directory of NAME.crt and NAME.key pairs, served after the --tls-cert pairs", apply: nonEmpty(func(c *Node, v string) { c.Node.TLS.Dir = v })},
		{name: "tls-strict-sni", flag: true, usage: "fail the handshake of a client whose SNI matches no certificate, instead of serving the default", apply: boolean(func(c *Node, b bool) { c.Node.TLS.StrictSNI = b })},
		{name: "tls-ticket-rotate", def: "1h", usage: "how often the mesh makes a new session-ticket key; the two before the current one still decrypt (needs --gossip-key to be shared)", apply: durationFrom(time.Minute, func(c *Node, d time.Duration) { c.Node.TLS.TicketRotate = d })},
		{name: "backend-tls", flag: true, usage: "speak TLS to every backend (verified against --backend-ca or the system's roots)", apply: boolean(func(c *Node, b bool) { c.Node.BackendTLS.Enabled = b })},
		{name: "backend-ca", usage: "PEM file of the roots backends' certificates must chain to (with --backend-tls)", apply: nonEmpty(func(c *Node, v string) { c.Node.BackendTLS.CAFile = v })},
		{name: "backend-sni", usage: "server name sent to and verified on backends (default: each backend's host)", apply: nonEmpty(func(c *Node, v string) { c.Node.BackendTLS.SNI = v })},
		{name: "backend-tls-insecure", flag: true, usage: "do not verify backends' certificates (logged at warn on every start)", apply: boolean(func(c *Node, b bool) { c.Node.BackendTLS.Insecure = b })},
		{name: "backend-cert", usage: "client certificate file for backends that require mutual TLS", apply: nonEmpty(func(c *Node, v string) { c.Node.BackendTLS.CertFile = v })},
		{name: "backend-key", usage: "private key file of --backend-cert", apply: nonEmpty(func(c *Node, v string) { c.Node.BackendTLS.KeyFile = v })},
		{name: "tls-reload-interval", def: "2s", usage: "how often the certificate files are checked for a change (SIGHUP reloads at once)", apply: posDuration(func(c *Node, d time.Duration) { c.Node.TLS.ReloadInterval = d })},
	}
}

func nonEmpty(set func(*Node, string)) func(*Node, string) error {
	return func(c *Node, v string) error {
		if v == "" {
			return errors.New("must not be empty")
		}
		set(c, v)
		return nil
	}
}
