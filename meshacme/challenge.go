package meshacme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Challenge types (the flag's values).
const (
	HTTP01    = "http-01"
	TLSALPN01 = "tls-alpn-01"
)

// ALPNProto is the protocol a TLS-ALPN-01 validation offers (RFC 8737).
const ALPNProto = "acme-tls/1"

// HTTPPath is where HTTP-01 tokens are served.
const HTTPPath = "/.well-known/acme-challenge/"

// Challenge entries are replicated under "c/DOMAIN/TOKEN" with the type
// and key authorization as value, and each node acknowledges one it holds
// under "a/DOMAIN/TOKEN/NODE" (empty value): the orderer asks the CA to
// validate only once every live member holds the answer.

// ChallengeKey names a challenge's entry.
func ChallengeKey(domain, token string) string { return "c/" + domain + "/" + token }

// AckKey names node's acknowledgement of a challenge.
func AckKey(domain, token, node string) string { return "a/" + domain + "/" + token + "/" + node }

// ParseChallengeKey splits either key; node is "" for a challenge.
func ParseChallengeKey(key string) (ack bool, domain, token, node string, err error) {
	parts := strings.Split(key, "/")
	switch {
	case len(parts) == 3 && parts[0] == "c":
	case len(parts) == 4 && parts[0] == "a":
		ack, node = true, parts[3]
		if node == "" || len(node) > maxNodeName {
			return false, "", "", "", fmt.Errorf("acme ack key %q: bad node name", key)
		}
	default:
		return false, "", "", "", fmt.Errorf("acme challenge key %q: want c/domain/token or a/domain/token/node", key)
	}
	domain, token = parts[1], parts[2]
	if err := ValidateDomain(domain); err != nil {
		return false, "", "", "", err
	}
	if !validToken(token) {
		return false, "", "", "", fmt.Errorf("acme challenge key %q: bad token", key)
	}
	return ack, domain, token, node, nil
}

// validToken: RFC 8555 tokens are base64url, at least 128 bits.
func validToken(t string) bool {
	if len(t) < 16 || len(t) > 128 {
		return false
	}
	for _, c := range []byte(t) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// EncodeChallenge is a challenge entry's value.
func EncodeChallenge(typ, keyAuth string) []byte { return []byte(typ + " " + keyAuth) }

// DecodeChallenge parses a challenge value, checking that the key
// authorization is the token's (token "." thumbprint).
func DecodeChallenge(token string, v []byte) (typ, keyAuth string, err error) {
	typ, keyAuth, ok := strings.Cut(string(v), " ")
	if !ok || (typ != HTTP01 && typ != TLSALPN01) {
		return "", "", fmt.Errorf("acme challenge: unknown type in %q", typ)
	}
	thumb, ok := strings.CutPrefix(keyAuth, token+".")
	if !ok || len(keyAuth) > maxKeyAuth || !validToken(thumb) {
		return "", "", fmt.Errorf("acme challenge: key authorization is not the token's")
	}
	return typ, keyAuth, nil
}

// ValidateChallengeEntry is the challenge kind's rule.
func ValidateChallengeEntry(key string, v []byte) error {
	ack, _, token, _, err := ParseChallengeKey(key)
	if err != nil {
		return err
	}
	if ack {
		if len(v) != 0 {
			return fmt.Errorf("acme ack %q: want an empty value", key)
		}
		return nil
	}
	if len(v) == 0 {
		return nil // a tombstone's
	}
	_, _, err = DecodeChallenge(token, v)
	return err
}

var idPeACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// ALPNCert is the self-signed certificate answering a TLS-ALPN-01
// validation of domain (RFC 8737): any key will do, so every node makes
// its own from the replicated key authorization and no key travels.
func ALPNCert(domain, keyAuth string) (*tls.Certificate, error) {
	sum := sha256.Sum256([]byte(keyAuth))
	ext, err := asn1.Marshal(sum[:])
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: domain},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		DNSNames:     []string{domain},
		ExtraExtensions: []pkix.Extension{
			{Id: idPeACMEIdentifier, Critical: true, Value: ext},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
