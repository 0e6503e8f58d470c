package config

import (
	"io"
	"slices"
	"testing"
	"time"
)

func TestTLSOptions(t *testing.T) {
	c, err := ParseNode([]string{"--name", "a", "--listen-tls", ":8443",
		"--tls-cert", "a.crt", "--tls-key", "a.key", "--tls-cert", "b.crt", "--tls-key", "b.key",
		"--tls-dir", "/etc/meshlb/tls", "--tls-strict-sni", "--tls-ticket-rotate", "30m",
		"--backend-tls", "--backend-ca", "ca.pem", "--backend-sni", "api.internal"},
		[]string{"MESHLB_TLS_RELOAD_INTERVAL=5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tc := c.Node.TLS
	if tc.Addr != ":8443" || !slices.Equal(tc.CertFiles, []string{"a.crt", "b.crt"}) || !slices.Equal(tc.KeyFiles, []string{"a.key", "b.key"}) ||
		tc.Dir != "/etc/meshlb/tls" || !tc.StrictSNI || tc.TicketRotate != 30*time.Minute || tc.ReloadInterval != 5*time.Second {
		t.Errorf("tls = %+v", tc)
	}
	if b := c.Node.BackendTLS; !b.Enabled || b.CAFile != "ca.pem" || b.SNI != "api.internal" || b.Insecure {
		t.Errorf("backend tls = %+v", b)
	}
	for _, bad := range [][]string{
		{"--tls-ticket-rotate", "10s"},
		{"--listen-tls", "nope"},
		{"--tls-cert", ""},
	} {
		if _, err := ParseNode(append([]string{"--name", "a"}, bad...), nil, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
