package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// BackendTLSConfig configures TLS from the node to its backends. It is
// off unless Enabled; it applies to every backend.
type BackendTLSConfig struct {
	Enabled bool
	// CAFile holds the PEM roots backends' certificates must chain to.
	// Default: the system's roots.
	CAFile string
	// SNI is the server name sent and verified. Default: each backend's
	// host, a name or an IP address.
	SNI string
	// Insecure skips verification of the backends' certificates. It is
	// logged at warn on every start.
	Insecure bool
	// CertFile and KeyFile, together, are the client certificate for
	// backends that require mutual TLS.
	CertFile, KeyFile string
}

func (c BackendTLSConfig) validate() error {
	if !c.Enabled {
		if c.CAFile != "" || c.SNI != "" || c.Insecure || c.CertFile != "" || c.KeyFile != "" {
			return errors.New("backend tls: options given without backend tls on")
		}
		return nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("backend tls: a client certificate needs both its cert and key file")
	}
	return nil
}

// clientConfig loads the files into a tls.Config for router.
func (c BackendTLSConfig) clientConfig() (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: c.SNI, InsecureSkipVerify: c.Insecure, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("backend ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("backend ca %s: no PEM certificate in it", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("backend client certificate %s and %s: %w", c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
