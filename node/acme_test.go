package node

import (
	"strings"
	"testing"
)

// TestACMEConfigRefused: what ACME needs is checked before a node starts,
// each with an error naming the flag.
func TestACMEConfigRefused(t *testing.T) {
	base := func() Config {
		c := Config{Name: "a", ListenAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"}
		c.TLS.Addr = "127.0.0.1:0"
		c.Gossip.SecretKey = make([]byte, 32)
		c.ACME = ACMEConfig{Domains: []string{"a.example.com"}, DataDir: t.TempDir()}
		return c
	}
	if err := base().withDefaults().validate(); err != nil {
		t.Fatalf("a good config refused: %v", err)
	}
	for name, tc := range map[string]struct {
		edit func(*Config)
		want string
	}{
		"no gossip key": {func(c *Config) { c.Gossip.SecretKey = nil }, "--gossip-key"},
		"no data dir":   {func(c *Config) { c.ACME.DataDir = "" }, "--data-dir"},
		"no tls":        {func(c *Config) { c.TLS.Addr = "" }, "--listen-tls"},
		"wildcard":      {func(c *Config) { c.ACME.Domains = []string{"*.example.com"} }, "DNS-01"},
		"twice":         {func(c *Config) { c.ACME.Domains = []string{"a.example.com", "a.example.com"} }, "twice"},
		"too many": {func(c *Config) {
			c.ACME.Domains = nil
			for i := range maxACMEDomains + 1 {
				c.ACME.Domains = append(c.ACME.Domains, string(rune('a'+i))+".example.com")
			}
		}, "at most"},
		"bad challenge": {func(c *Config) { c.ACME.Challenge = "dns-01" }, "http-01 or tls-alpn-01"},
		"plain ca":      {func(c *Config) { c.ACME.CA = "http://ca/dir" }, "https://"},
		"email alone":   {func(c *Config) { c.ACME.Domains = nil; c.ACME.Email = "x@example.com" }, "without --acme-domain"},
	} {
		c := base()
		tc.edit(&c)
		err := c.withDefaults().validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error naming %q", name, err, tc.want)
		}
	}
}
