package meshacme

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Bounds of the replicated values. A chunk and its key fit one gossip
// value (512 bytes); a bundle of a P-256 key and a chain of up to four
// certificates of 2 kB is some 8 kB, so MaxChunks leaves room.
const (
	ChunkSize   = 448
	MaxChunks   = 32
	MaxBundle   = ChunkSize * MaxChunks
	maxErrLen   = 160
	maxKeyAuth  = 256
	MaxRecord   = 512
	maxDomain   = 253
	maxNodeName = 64
)

// Rank orders the candidates to order domain: rendezvous (highest random
// weight) hashing, so that every node given the same names agrees, and a
// member leaving moves only the domains it ranked first for.
func Rank(domain string, names []string) []string {
	out := slices.Clone(names)
	score := func(n string) uint64 { return xxhash.Sum64String(domain + "\x00" + n) }
	slices.SortFunc(out, func(a, b string) int {
		sa, sb := score(a), score(b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// ValidateDomain checks a name an operator asks a certificate for: a DNS
// name in lower case, no wildcard (HTTP-01 and TLS-ALPN-01 cannot prove
// one), no trailing dot.
func ValidateDomain(d string) error {
	if d == "" || len(d) > maxDomain {
		return fmt.Errorf("acme domain %q: want 1 to %d bytes", d, maxDomain)
	}
	if d != strings.ToLower(d) {
		return fmt.Errorf("acme domain %q: want lower case", d)
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return fmt.Errorf("acme domain %q: want a fully qualified name like ws.example.com", d)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("acme domain %q: label %q is not a DNS label", d, l)
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("acme domain %q: %q is not allowed (wildcards need DNS-01, which meshlb does not do)", d, string(c))
			}
		}
	}
	return nil
}

// Record is the mesh's word on one domain (replicated under the domain's
// name): the certificate every node should serve, named by its serial and
// checked by the SHA-256 of its bundle, and what the orderer is doing.
type Record struct {
	Serial    string    `json:"serial,omitempty"` // hex, of the current certificate
	Chunks    int       `json:"chunks,omitempty"`
	Sum       string    `json:"sum,omitempty"` // hex SHA-256 of the bundle
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	// State is ordering (no certificate yet), renewing, failed or valid;
	// By is the node that last set it, Err the last failure.
	State string    `json:"state"`
	By    string    `json:"by,omitempty"`
	Err   string    `json:"err,omitempty"`
	At    time.Time `json:"at,omitzero"`
}

// States of a Record.
const (
	StateOrdering = "ordering"
	StateRenewing = "renewing"
	StateFailed   = "failed"
	StateValid    = "valid"
)

// Encode returns the record's value, its error cut to fit.
func (r Record) Encode() ([]byte, error) {
	if len(r.Err) > maxErrLen {
		r.Err = r.Err[:maxErrLen]
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRecord {
		return nil, fmt.Errorf("acme record of %d bytes, limit %d", len(b), MaxRecord)
	}
	return b, nil
}

// DecodeRecord parses and checks a record replicated under key.
func DecodeRecord(key string, v []byte) (Record, error) {
	var r Record
	if err := ValidateDomain(key); err != nil {
		return r, err
	}
	if len(v) > MaxRecord {
		return r, errors.New("acme record too large")
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("acme record: %w", err)
	}
	switch r.State {
	case StateOrdering, StateRenewing, StateFailed, StateValid:
	default:
		return r, fmt.Errorf("acme record: unknown state %q", r.State)
	}
	if r.Serial != "" {
		if !validSerial(r.Serial) {
			return r, errors.New("acme record: bad serial")
		}
		if s, err := hex.DecodeString(r.Sum); err != nil || len(s) != sha256.Size {
			return r, errors.New("acme record: bad sum")
		}
		if r.Chunks < 1 || r.Chunks > MaxChunks {
			return r, fmt.Errorf("acme record: %d chunks, want 1 to %d", r.Chunks, MaxChunks)
		}
	}
	return r, nil
}

// validSerial: a serial as big.Int.Text(16) writes it, of any length
// parity, at most 20 bytes by RFC 5280 (and some slack).
func validSerial(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ChunkKey names chunk i of a certificate's bundle.
func ChunkKey(domain, serial string, i int) string {
	return domain + "/" + serial + "/" + strconv.Itoa(i)
}

// ParseChunkKey splits a chunk key, checking each part.
func ParseChunkKey(key string) (domain, serial string, i int, err error) {
	parts := strings.Split(key, "/")
	if len(parts) != 3 {
		return "", "", 0, fmt.Errorf("acme chunk key %q: want domain/serial/index", key)
	}
	if err := ValidateDomain(parts[0]); err != nil {
		return "", "", 0, err
	}
	if !validSerial(parts[1]) {
		return "", "", 0, fmt.Errorf("acme chunk key %q: bad serial", key)
	}
	i, err = strconv.Atoi(parts[2])
	if err != nil || i < 0 || i >= MaxChunks || strconv.Itoa(i) != parts[2] {
		return "", "", 0, fmt.Errorf("acme chunk key %q: bad index", key)
	}
	return parts[0], parts[1], i, nil
}

// ValidateChunk is the chunk kind's rule.
func ValidateChunk(key string, v []byte) error {
	if _, _, _, err := ParseChunkKey(key); err != nil {
		return err
	}
	if len(v) > ChunkSize {
		return fmt.Errorf("acme chunk of %d bytes, limit %d", len(v), ChunkSize)
	}
	return nil
}

// Split cuts a bundle into chunks and returns them with its SHA-256.
func Split(bundle []byte) ([][]byte, string, error) {
	if len(bundle) == 0 || len(bundle) > MaxBundle {
		return nil, "", fmt.Errorf("acme bundle of %d bytes, want 1 to %d", len(bundle), MaxBundle)
	}
	var out [][]byte
	for b := bundle; len(b) > 0; {
		n := min(len(b), ChunkSize)
		out = append(out, b[:n:n])
		b = b[n:]
	}
	sum := sha256.Sum256(bundle)
	return out, hex.EncodeToString(sum[:]), nil
}

// Join puts chunks together and checks them against the record: a node
// only installs a complete set whose sum matches.
func Join(r Record, chunks [][]byte) ([]byte, error) {
	if len(chunks) != r.Chunks {
		return nil, fmt.Errorf("acme bundle: %d of %d chunks", len(chunks), r.Chunks)
	}
	b := bytes.Join(chunks, nil)
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != r.Sum {
		return nil, errors.New("acme bundle: checksum mismatch")
	}
	return b, nil
}

// Bundle is a private key (PKCS #8) and its chain (DER, leaf first): the
// bytes replicated, length-prefixed.
func Bundle(keyDER []byte, chain [][]byte) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint16(b, uint16(len(keyDER)))
	b = append(b, keyDER...)
	for _, c := range chain {
		b = binary.BigEndian.AppendUint16(b, uint16(len(c)))
		b = append(b, c...)
	}
	return b
}

// Cert is a parsed, usable certificate.
type Cert struct {
	TLS    *tls.Certificate
	Leaf   *x509.Certificate
	Serial string
	KeyDER []byte
	Chain  [][]byte
}

// ParseBundle decodes a bundle into a certificate whose key matches its
// leaf.
func ParseBundle(b []byte) (*Cert, error) {
	var parts [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("acme bundle: truncated")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n || n == 0 {
			return nil, errors.New("acme bundle: truncated")
		}
		parts = append(parts, b[2:2+n])
		b = b[2+n:]
	}
	if len(parts) < 2 {
		return nil, errors.New("acme bundle: want a key and at least one certificate")
	}
	return NewCert(parts[0], parts[1:])
}

// NewCert builds a certificate from a PKCS #8 key and a DER chain.
func NewCert(keyDER []byte, chain [][]byte) (*Cert, error) {
	key, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("acme key: %w", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("acme certificate: %w", err)
	}
	tc := &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
	// tls.X509KeyPair's check that the key is the leaf's.
	if _, err := tls.X509KeyPair(pemChain(chain), pemKey(keyDER)); err != nil {
		return nil, fmt.Errorf("acme certificate: %w", err)
	}
	return &Cert{TLS: tc, Leaf: leaf, Serial: leaf.SerialNumber.Text(16), KeyDER: keyDER, Chain: chain}, nil
}

// RenewAt is two thirds into the certificate's lifetime.
func RenewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3)
}
