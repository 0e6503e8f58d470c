package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a certificate and key signed by ca (self-signed when
// ca is nil) and returns their paths and the parsed pair for signing.
func writeCert(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, client bool) (certPath, keyPath string, cert *x509.Certificate, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	parent, signer := tmpl, key
	if ca == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.ExtKeyUsage = nil // an EKU on the CA would bind its children to it
	} else {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	kb, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath, cert, key
}

// TestAdminTLS serves the admin API over mutual TLS: the CLI with the CA
// and a client certificate gets in, without the certificate it does not,
// and plain HTTP gets nothing.
func TestAdminTLS(t *testing.T) {
	dir := t.TempDir()
	caPath, _, ca, caKey := writeCert(t, dir, "ca", nil, nil, false)
	srvCert, srvKey, _, _ := writeCert(t, dir, "server", ca, caKey, false)
	cliCert, cliKey, _, _ := writeCert(t, dir, "client", ca, caKey, true)
	_, s := startNode(t, "a", "--admin-tls-cert", srvCert, "--admin-tls-key", srvKey, "--admin-client-ca", caPath)
	url := "https://" + s.AdminAddr
	if out, errOut, code := cli(t, "status", "--admin-url", url, "--cacert", caPath, "--cert", cliCert, "--key", cliKey); code != 0 || !strings.Contains(out, "node a") {
		t.Fatalf("status over mTLS: exit %d, %s%s", code, out, errOut)
	}
	if _, _, code := cli(t, "status", "--admin-url", url, "--cacert", caPath); code != 1 {
		t.Errorf("status without a client certificate: exit %d; want 1", code)
	}
	if _, _, code := cli(t, "status", "--admin-url", url); code != 1 {
		t.Errorf("status without the CA: exit %d; want 1", code)
	}
	if _, _, code := cli(t, "status", "--admin-url", "http://"+s.AdminAddr); code != 1 {
		t.Errorf("status over plain HTTP: exit %d; want 1", code)
	}
}
