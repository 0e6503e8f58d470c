package meshacme

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func selfSigned(t testing.TB, domain string, life time.Duration) ([]byte, [][]byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x1234abcd), Subject: pkix.Name{CommonName: domain},
		NotBefore: now, NotAfter: now.Add(life), DNSNames: []string{domain}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return kder, [][]byte{der, der} // a chain of two, as a CA's is
}

// TestRankAgreesAndMovesLittle: the order depends on the set, not on how
// it is listed, and a member leaving moves only the domains it led.
func TestRankAgreesAndMovesLittle(t *testing.T) {
	names := []string{"n0", "n1", "n2", "n3", "n4"}
	rev := slices.Clone(names)
	slices.Reverse(rev)
	moved, led := 0, 0
	for i := range 1000 {
		d := "d" + string(rune('a'+i%26)) + strings.Repeat("x", i%7) + ".example.com"
		a, b := Rank(d, names), Rank(d, rev)
		if !slices.Equal(a, b) {
			t.Fatalf("%s: %v vs %v", d, a, b)
		}
		without := Rank(d, names[1:])
		if a[0] == "n0" {
			led++
			if without[0] != a[1] {
				t.Fatalf("%s: the next in rank %s did not take over, %s did", d, a[1], without[0])
			}
		} else if without[0] != a[0] {
			moved++
		}
	}
	if moved != 0 || led == 0 {
		t.Fatalf("%d domains moved that n0 did not lead (%d led)", moved, led)
	}
}

func TestChunksRoundTrip(t *testing.T) {
	kder, chain := selfSigned(t, "ws.example.com", time.Hour)
	b := Bundle(kder, chain)
	chunks, sum, err := Split(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	r := Record{Serial: c.Serial, Chunks: len(chunks), Sum: sum, State: StateValid, NotBefore: c.Leaf.NotBefore, NotAfter: c.Leaf.NotAfter}
	v, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	r2, err := DecodeRecord("ws.example.com", v)
	if err != nil || r2.Sum != sum || r2.Chunks != len(chunks) {
		t.Fatalf("record round trip: %+v, %v", r2, err)
	}
	for i, ch := range chunks {
		if err := ValidateChunk(ChunkKey("ws.example.com", c.Serial, i), ch); err != nil {
			t.Fatal(err)
		}
	}
	joined, err := Join(r2, chunks)
	if err != nil || !bytes.Equal(joined, b) {
		t.Fatalf("join: %v", err)
	}
	if _, err := Join(r2, chunks[:len(chunks)-1]); err == nil {
		t.Fatal("an incomplete set joined")
	}
	bad := slices.Clone(chunks)
	bad[0] = append([]byte{bad[0][0] ^ 1}, bad[0][1:]...)
	if _, err := Join(r2, bad); err == nil {
		t.Fatal("a corrupted set joined")
	}
	if got := RenewAt(c.Leaf); !got.Equal(c.Leaf.NotBefore.Add(40 * time.Minute)) {
		t.Fatalf("renew at %v, want two thirds of an hour in", got)
	}
}

func TestDiskRoundTrip(t *testing.T) {
	kder, chain := selfSigned(t, "ws.example.com", time.Hour)
	c, err := NewCert(kder, chain)
	if err != nil {
		t.Fatal(err)
	}
	p := Path(t.TempDir(), "ws.example.com")
	if err := Save(p, c); err != nil {
		t.Fatal(err)
	}
	got, err := Load(p)
	if err != nil || got.Serial != c.Serial || len(got.Chain) != 2 {
		t.Fatalf("load: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.pem")); err == nil {
		t.Fatal("a missing file loaded")
	}
}

// TestKeyMismatchRefused: a bundle whose key is not its leaf's is refused.
func TestKeyMismatchRefused(t *testing.T) {
	k1, _ := selfSigned(t, "a.example.com", time.Hour)
	_, c2 := selfSigned(t, "a.example.com", time.Hour)
	if _, err := ParseBundle(Bundle(k1, c2)); err == nil {
		t.Fatal("a key with another certificate was accepted")
	}
}

// TestOddSerial: a serial of odd hex length (big.Int.Text(16) drops
// the leading zero) is as good as any.
func TestOddSerial(t *testing.T) {
	if err := ValidateChunk(ChunkKey("ws.example.com", "81db574aaadc846", 0), []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "XYZ", "AB", strings.Repeat("a", 65)} {
		if ValidateChunk("ws.example.com/"+bad+"/0", nil) == nil {
			t.Errorf("serial %q accepted", bad)
		}
	}
}

func TestValidateDomain(t *testing.T) {
	for _, d := range []string{"ws.example.com", "a-b.c0.io"} {
		if err := ValidateDomain(d); err != nil {
			t.Errorf("%s: %v", d, err)
		}
	}
	for _, d := range []string{"", "localhost", "*.example.com", "WS.example.com", "a..b", "-a.b", "a.b.", "a b.c", "a/b.c"} {
		if ValidateDomain(d) == nil {
			t.Errorf("%q accepted", d)
		}
	}
}

func TestChallengeCodec(t *testing.T) {
	tok := "abcdefghijklmnopqrstuvwxyz012345"
	ka := tok + ".thumbprint_of_the_key-0123456789"
	key := ChallengeKey("ws.example.com", tok)
	if err := ValidateChallengeEntry(key, EncodeChallenge(HTTP01, ka)); err != nil {
		t.Fatal(err)
	}
	if err := ValidateChallengeEntry(AckKey("ws.example.com", tok, "n1"), nil); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string][]byte{
		"other token": EncodeChallenge(HTTP01, "zzzzzzzzzzzzzzzzzzzz.thumbprint_of_the_key"),
		"bad type":    EncodeChallenge("dns-01", ka),
		"no type":     []byte(ka),
	} {
		if ValidateChallengeEntry(key, v) == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if ValidateChallengeEntry(AckKey("ws.example.com", tok, "n1"), []byte("x")) == nil {
		t.Error("an ack with a value accepted")
	}
}

// TestALPNCert: the challenge certificate carries the SHA-256 of the key
// authorization in a critical acmeIdentifier extension (RFC 8737).
func TestALPNCert(t *testing.T) {
	c, err := ALPNCert("ws.example.com", "tok.thumb")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("tok.thumb"))
	for _, e := range leaf.Extensions {
		if e.Id.Equal(idPeACMEIdentifier) {
			var got []byte
			if _, err := asn1.Unmarshal(e.Value, &got); err != nil || !bytes.Equal(got, want[:]) || !e.Critical {
				t.Fatalf("acmeIdentifier %x critical %v: %v", got, e.Critical, err)
			}
			if err := leaf.VerifyHostname("ws.example.com"); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatal("no acmeIdentifier extension")
}

// The replicated values come from peers: their decoders never panic and
// what they accept re-encodes within bounds.
func FuzzDecodeRecord(f *testing.F) {
	v, _ := Record{State: StateFailed, By: "n1", Err: "x"}.Encode()
	f.Add("ws.example.com", v)
	f.Add("ws.example.com", []byte(`{"state":"valid","serial":"ab","chunks":3,"sum":"00"}`))
	f.Fuzz(func(t *testing.T, key string, v []byte) {
		r, err := DecodeRecord(key, v)
		if err != nil {
			return
		}
		if _, err := r.Encode(); err != nil && len(v) <= MaxRecord {
			t.Fatalf("accepted record does not encode: %v", err)
		}
	})
}

func FuzzEntries(f *testing.F) {
	f.Add("ws.example.com/ab/0", []byte("x"))
	f.Add("c/ws.example.com/abcdefghijklmnopqrstuvwxyz", []byte("http-01 abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyz"))
	f.Add("a/ws.example.com/abcdefghijklmnopqrstuvwxyz/n1", []byte{})
	f.Fuzz(func(t *testing.T, key string, v []byte) {
		_ = ValidateChunk(key, v)
		_ = ValidateChallengeEntry(key, v)
	})
}

func FuzzParseBundle(f *testing.F) {
	kder, chain := selfSigned(f, "ws.example.com", time.Hour)
	f.Add(Bundle(kder, chain))
	f.Add([]byte{0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseBundle(b); err == nil && c.TLS == nil {
			t.Fatal("accepted without a certificate")
		}
	})
}
