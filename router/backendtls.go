package router

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
)

// backendTLS makes the client side of TLS to backends: one tls.Config
// per server name, cloned once from Config.BackendTLS and kept, so that
// the shared session cache lets reconnects to a backend resume.
type backendTLS struct {
	base  *tls.Config
	mu    sync.Mutex
	bySNI map[string]*tls.Config
}

func newBackendTLS(base *tls.Config) *backendTLS {
	if base == nil {
		return nil
	}
	base = base.Clone()
	if base.ClientSessionCache == nil {
		base.ClientSessionCache = tls.NewLRUClientSessionCache(256)
	}
	if base.MinVersion == 0 {
		base.MinVersion = tls.VersionTLS12
	}
	return &backendTLS{base: base, bySNI: map[string]*tls.Config{}}
}

// configFor returns the config for a backend at addr: the configured
// server name, or the backend's host (a name, or an IP address checked
// against the certificate's IP SANs).
func (b *backendTLS) configFor(addr string) *tls.Config {
	if b.base.ServerName != "" {
		return b.base
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.bySNI[host]
	if !ok {
		if len(b.bySNI) > 4096 { // backends come and go; bound what is kept
			clear(b.bySNI)
		}
		c = b.base.Clone()
		c.ServerName = host
		b.bySNI[host] = c
	}
	return c
}

// client runs the TLS handshake on conn to the backend at addr, bounded
// by ctx; conn is closed on failure.
func (b *backendTLS) client(ctx context.Context, conn net.Conn, addr string) (net.Conn, error) {
	tc := tls.Client(conn, b.configFor(addr))
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("backend tls handshake: %w", err)
	}
	return tc, nil
}
