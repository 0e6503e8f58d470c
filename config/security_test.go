package config

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestSecurityOptions(t *testing.T) {
	for _, tc := range []struct {
		label string
		args  []string
		env   []string
		err   string // "" for success
	}{
		{"loopback needs nothing", []string{"--admin", "127.0.0.1:9901"}, nil, ""},
		{"public without tokens", []string{"--admin", "0.0.0.0:9901"}, nil, "--admin-token-file"},
		{"public, insecure said", []string{"--admin", "0.0.0.0:9901", "--admin-insecure"}, nil, ""},
		{"public, insecure from env", []string{"--admin", ":9901"}, []string{"MESHLB_ADMIN_INSECURE=true"}, ""},
		{"public with tokens", []string{"--admin", "10.0.0.1:9901", "--admin-token-file", "/etc/meshlb/tokens"}, nil, ""},
		{"cert without key", []string{"--admin-tls-cert", "c.pem"}, nil, "--admin-tls-key"},
		{"client ca alone", []string{"--admin-client-ca", "ca.pem"}, nil, "--admin-client-ca"},
		{"bad origin", []string{"--admin-allowed-origins", "evil.example"}, nil, "origin"},
		{"origins", []string{"--admin-allowed-origins", "https://a.example, http://b.example:8000"}, nil, ""},
		{"limits", []string{"--max-conns-per-ip", "100", "--handshake-rate-per-ip", "5/s", "--handshake-burst-per-ip", "10"}, nil, ""},
		{"negative limit", []string{"--max-conns-per-ip", "-1"}, nil, "max-conns-per-ip"},
		{"bad rate", []string{"--handshake-rate-per-ip", "fast"}, nil, "handshake-rate-per-ip"},
	} {
		t.Run(tc.label, func(t *testing.T) {
			c, err := ParseNode(append([]string{"--name", "a"}, tc.args...), tc.env, io.Discard)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("error %v; want none", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v; want one naming %q", err, tc.err)
			case tc.err != "" && !errors.As(err, new(*UsageError)):
				t.Fatalf("error %v is not a UsageError (exit 2)", err)
			}
			if tc.label == "limits" && (c.Node.Router.MaxConnsPerIP != 100 || c.Node.Router.HandshakeRatePerIP != 5 || c.Node.Router.HandshakeBurstPerIP != 10) {
				t.Fatalf("limits %+v", c.Node.Router)
			}
		})
	}
}
