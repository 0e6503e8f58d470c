package config

import "github.com/meshlb/meshlb/meshacme"

// acmeOptions are automatic HTTPS's options (node.ACMEConfig).
func acmeOptions() []option {
	return []option{
		{name: "acme-domain", list: true, usage: "a name the mesh gets a certificate for from the ACME CA, served on --listen-tls; repeat (at most 10; needs --gossip-key and --data-dir)", apply: nonEmpty(func(c *Node, v string) { c.Node.ACME.Domains = append(c.Node.ACME.Domains, v) })},
		{name: "acme-ca", def: meshacme.LetsEncrypt, usage: "ACME directory URL (Let's Encrypt staging: https://acme-staging-v02.api.letsencrypt.org/directory)", apply: nonEmpty(func(c *Node, v string) { c.Node.ACME.CA = v })},
		{name: "acme-email", usage: "contact address given to the ACME CA (expiry notices)", apply: nonEmpty(func(c *Node, v string) { c.Node.ACME.Email = v })},
		{name: "acme-ca-root", usage: "PEM file of roots trusted for the ACME CA's HTTPS, beside the system's (a private or test CA)", apply: nonEmpty(func(c *Node, v string) { c.Node.ACME.CARoot = v })},
		{name: "acme-challenge", def: meshacme.HTTP01, usage: "http-01 (answered on --listen, which the CA reaches on port 80) or tls-alpn-01 (on --listen-tls, reached on 443)", apply: nonEmpty(func(c *Node, v string) { c.Node.ACME.Challenge = v })},
		{name: "data-dir", usage: "directory this node keeps state in across restarts: the ACME account key and certificates (under acme/)", apply: nonEmpty(func(c *Node, v string) { c.Node.ACME.DataDir = v })},
	}
}
