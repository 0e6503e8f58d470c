package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// The DNS flags reach the node config; a bad name server is a usage
// error naming the option.
func TestDNSOptions(t *testing.T) {
	c, err := ParseNode([]string{"--name=a", "--advertise-proxy", "10.0.0.11:8080", "--dns-listen", ":53",
		"--dns-name", "ws.example.com,chat.example.com", "--dns-ttl", "10s", "--dns-max-answers", "4",
		"--dns-ns", "ns1.ws.example.com=10.0.0.11", "--dns-ns", "ns.other.net", "--dns-rate-limit", "20"}, nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	d := c.Node.DNS
	if c.Node.AdvertiseProxy != "10.0.0.11:8080" || d.Addr != ":53" || len(d.Names) != 2 || d.TTL != 10*time.Second ||
		d.MaxAnswers != 4 || len(d.NS) != 2 || d.NS[0].Addr.String() != "10.0.0.11" || d.RateLimit != 20 {
		t.Fatalf("config = %+v, dns %+v", c.Node.AdvertiseProxy, d)
	}
	for _, args := range [][]string{{"--dns-ns", "ns1=banana"}, {"--dns-listen", "53"}, {"--advertise-proxy", "10.0.0.1"}, {"--dns-ttl", "0s"}} {
		_, err := ParseNode(append([]string{"--name=a"}, args...), nil, &bytes.Buffer{})
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: err = %v; want a usage error naming %s", args, err, args[0])
		}
	}
}
