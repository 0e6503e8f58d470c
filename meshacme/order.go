package meshacme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
)

// LetsEncrypt is the default CA; its staging directory, for trials, is
// https://acme-staging-v02.api.letsencrypt.org/directory.
const LetsEncrypt = acme.LetsEncryptURL

// Client orders certificates from one CA with this node's account.
// Orders of several domains may run at once (acme.Client is safe for
// concurrent use).
type Client struct {
	c     *acme.Client
	email string
	mu    sync.Mutex // guards reg
	reg   bool
}

// NewClient loads or makes the account key under dir and returns a
// client of the CA at url, trusting rootFile's certificates in addition
// to the system's when it is set.
func NewClient(url, email, rootFile, dir string) (*Client, error) {
	key, err := accountKey(filepath.Join(dir, "account.key"))
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if rootFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		b, err := os.ReadFile(rootFile)
		if err != nil {
			return nil, fmt.Errorf("acme ca root: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("acme ca root %s: no PEM certificate in it", rootFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		hc.Transport = tr
	}
	return &Client{c: &acme.Client{Key: key, DirectoryURL: url, HTTPClient: hc, UserAgent: "meshlb"}, email: email}, nil
}

// accountKey reads the node's ACME account key, making it on first use.
func accountKey(path string) (crypto.Signer, error) {
	if b, err := os.ReadFile(path); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: not PEM", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: not a signing key", path)
		}
		return s, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// Publisher spreads a challenge's answer to every node. Publish returns
// once every live node holds it (or ctx ends); Withdraw removes it.
type Publisher interface {
	Publish(ctx context.Context, domain, token, typ, keyAuth string) error
	Withdraw(domain, token string)
}

// register makes the account once per process (an existing one is
// found by its key).
func (c *Client) register(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reg {
		return nil
	}
	acct := &acme.Account{}
	if c.email != "" {
		acct.Contact = []string{"mailto:" + c.email}
	}
	if _, err := c.c.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return fmt.Errorf("acme register: %w", err)
	}
	c.reg = true
	return nil
}

// Obtain orders a certificate for domain, answering with typ through
// pub, and returns it with a fresh P-256 key.
func (c *Client) Obtain(ctx context.Context, domain, typ string, pub Publisher) (*Cert, error) {
	if err := c.register(ctx); err != nil {
		return nil, err
	}
	o, err := c.c.AuthorizeOrder(ctx, acme.DomainIDs(domain))
	if err != nil {
		return nil, fmt.Errorf("acme new order: %w", err)
	}
	for _, u := range o.AuthzURLs {
		z, err := c.c.GetAuthorization(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("acme authorization: %w", err)
		}
		if z.Status == acme.StatusValid {
			continue
		}
		var ch *acme.Challenge
		for _, x := range z.Challenges {
			if x.Type == typ {
				ch = x
			}
		}
		if ch == nil {
			return nil, fmt.Errorf("acme: the CA offers no %s challenge for %s", typ, domain)
		}
		keyAuth, err := c.c.HTTP01ChallengeResponse(ch.Token) // the key authorization, whatever the type
		if err != nil {
			return nil, err
		}
		if err := pub.Publish(ctx, domain, ch.Token, typ, keyAuth); err != nil {
			return nil, fmt.Errorf("acme: spread the challenge: %w", err)
		}
		defer pub.Withdraw(domain, ch.Token)
		if _, err := c.c.Accept(ctx, ch); err != nil {
			return nil, fmt.Errorf("acme accept challenge: %w", err)
		}
		if _, err := c.c.WaitAuthorization(ctx, z.URI); err != nil {
			return nil, fmt.Errorf("acme validation: %w", err)
		}
	}
	if o, err = c.c.WaitOrder(ctx, o.URI); err != nil {
		return nil, fmt.Errorf("acme order: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
	}, key)
	if err != nil {
		return nil, err
	}
	chain, _, err := c.c.CreateOrderCert(ctx, o.FinalizeURL, csr, true)
	if err != nil {
		return nil, fmt.Errorf("acme finalize: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	cert, err := NewCert(keyDER, chain)
	if err != nil {
		return nil, err
	}
	if err := cert.Leaf.VerifyHostname(domain); err != nil {
		return nil, fmt.Errorf("acme: the CA's certificate: %w", err)
	}
	return cert, nil
}
