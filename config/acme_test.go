package config

import (
	"io"
	"strings"
	"testing"
)

func TestACMEFlags(t *testing.T) {
	key := "--gossip-key=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	c, err := ParseNode([]string{"--name", "a", "--listen-tls", ":8443", key,
		"--acme-domain", "a.example.com", "--acme-domain", "b.example.com", "--acme-email", "ops@example.com",
		"--acme-challenge", "tls-alpn-01", "--data-dir", "/var/lib/meshlb"}, nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Node.ACME
	if len(a.Domains) != 2 || a.Challenge != "tls-alpn-01" || a.DataDir != "/var/lib/meshlb" || !strings.Contains(a.CA, "letsencrypt") {
		t.Fatalf("acme config %+v", a)
	}
}
