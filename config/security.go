package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/meshlb/meshlb/node"
)

// securityOptions are the options of the admin API's access control, the
// gossip keyring and the per-client limits (issue 13).
func securityOptions() []option {
	path := func(set func(*Node, string)) func(*Node, string) error {
		return func(c *Node, v string) error {
			if v = strings.TrimSpace(v); v == "" {
				return errors.New("want a file path")
			}
			set(c, v)
			return nil
		}
	}
	return []option{
		{name: "admin-token-file", usage: "file of lines \"TOKEN ROLE\" (role read or write); admin requests then need Authorization: Bearer TOKEN; reloaded on SIGHUP", apply: path(func(c *Node, v string) { c.Node.AdminTokenFile = v })},
		{name: "admin-auth-all", flag: true, usage: "also require a token for /healthz, /readyz and /metrics", apply: boolean(func(c *Node, b bool) { c.Node.AdminAuthAll = b })},
		{name: "admin-insecure", flag: true, usage: "serve the admin API on a non-loopback address without --admin-token-file (anyone who reaches it can change the whole mesh)", apply: boolean(func(c *Node, b bool) { c.Node.AdminInsecure = b })},
		{name: "admin-allowed-origins", list: true, usage: "browser origins (scheme://host[:port]) allowed to change the mesh through the admin API; a change with any other Origin is refused (403)", apply: func(c *Node, v string) error {
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				u, err := url.Parse(s)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
					return fmt.Errorf("%q is not an origin like https://ops.example.com", s)
				}
				c.Node.AdminAllowedOrigins = append(c.Node.AdminAllowedOrigins, s)
			}
			return nil
		}},
		{name: "admin-hosts", list: true, usage: "host names the admin API answers to in the Host header, besides IP addresses and localhost (DNS rebinding protection)", apply: func(c *Node, v string) error {
			for s := range strings.SplitSeq(v, ",") {
				if s = strings.TrimSpace(s); s != "" {
					c.Node.AdminHosts = append(c.Node.AdminHosts, s)
				}
			}
			return nil
		}},
		{name: "admin-tls-cert", usage: "PEM certificate: serve the admin API over TLS (with --admin-tls-key)", apply: path(func(c *Node, v string) { c.Node.AdminTLSCert = v })},
		{name: "admin-tls-key", usage: "PEM private key of --admin-tls-cert", apply: path(func(c *Node, v string) { c.Node.AdminTLSKey = v })},
		{name: "admin-client-ca", usage: "PEM CA: admin clients must present a certificate it signed (mTLS)", apply: path(func(c *Node, v string) { c.Node.AdminClientCA = v })},
		{name: "keyring-file", usage: "file keeping the gossip keyring across restarts (JSON, base64 keys, primary first); written by meshlb keys; when it exists it replaces --gossip-key", apply: path(func(c *Node, v string) { c.Node.KeyringFile = v })},
		{name: "max-conns-per-ip", def: "0", usage: "concurrent WebSockets and requests per client address (trusted proxies honoured, IPv6 by --ipv6-prefix); past it 429 (0: no limit)", apply: func(c *Node, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not a number >= 0", v)
			}
			c.Node.Router.MaxConnsPerIP = n
			return nil
		}},
		{name: "handshake-rate-per-ip", def: "0", usage: "new requests and WebSocket handshakes per second per client address, with a burst of --handshake-burst-per-ip; past it 429 (0: no limit)", apply: func(c *Node, v string) error {
			r, err := strconv.ParseFloat(strings.TrimSuffix(v, "/s"), 64)
			if err != nil || r < 0 || r > 1e6 {
				return fmt.Errorf("%q is not a rate in 0..1000000 per second", v)
			}
			c.Node.Router.HandshakeRatePerIP = r
			return nil
		}},
		{name: "handshake-burst-per-ip", def: "0", usage: "burst of --handshake-rate-per-ip (0: the rate, at least 1)", apply: func(c *Node, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return fmt.Errorf("%q is not a number >= 0", v)
			}
			c.Node.Router.HandshakeBurstPerIP = n
			return nil
		}},
	}
}

// checkSecurity names the flags of a refusal the node would make anyway.
func checkSecurity(c Node) error {
	if c.Node.AdminTokenFile == "" && !c.Node.AdminInsecure && !node.IsLoopbackHostPort(c.Node.AdminAddr) {
		return usageErrorf("--admin %s is not a loopback address: give --admin-token-file (tokens), or --admin-insecure to serve it without tokens", c.Node.AdminAddr)
	}
	if (c.Node.AdminTLSCert == "") != (c.Node.AdminTLSKey == "") {
		return usageErrorf("--admin-tls-cert and --admin-tls-key go together")
	}
	if c.Node.AdminClientCA != "" && c.Node.AdminTLSCert == "" {
		return usageErrorf("--admin-client-ca needs --admin-tls-cert and --admin-tls-key")
	}
	return nil
}
