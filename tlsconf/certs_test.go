package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed ECDSA P-256 certificate for names to
// dir/base.crt and dir/base.key.
func writePair(t testing.TB, dir, base string, notAfter time.Time, names ...string) Pair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, DNSNames: names}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	p := Pair{Cert: filepath.Join(dir, base+".crt"), Key: filepath.Join(dir, base+".key")}
	must(t, os.WriteFile(p.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.WriteFile(p.Key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600))
	return p
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestBadInputNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	good := writePair(t, dir, "good", time.Now().Add(time.Hour), "a.test")
	other := writePair(t, t.TempDir(), "other", time.Now().Add(time.Hour), "b.test")
	garbage := filepath.Join(dir, "garbage.pem")
	must(t, os.WriteFile(garbage, []byte("hello"), 0o600))
	empty := t.TempDir()
	orphan := t.TempDir()
	must(t, os.WriteFile(filepath.Join(orphan, "x.crt"), []byte("x"), 0o600))
	onlyKey := t.TempDir()
	must(t, os.WriteFile(filepath.Join(onlyKey, "y.key"), []byte("y"), 0o600))
	for _, tc := range []struct {
		label string
		cfg   Config
		want  string
	}{
		{"nothing", Config{}, "no certificate"},
		{"missing file", Config{Pairs: []Pair{{Cert: filepath.Join(dir, "nope.crt"), Key: good.Key}}}, "nope.crt"},
		{"garbage cert", Config{Pairs: []Pair{{Cert: garbage, Key: good.Key}}}, "garbage.pem"},
		{"garbage key", Config{Pairs: []Pair{{Cert: good.Cert, Key: garbage}}}, "garbage.pem"},
		{"key of another cert", Config{Pairs: []Pair{{Cert: good.Cert, Key: other.Key}}}, "does not match"},
		{"empty dir", Config{Dir: empty}, "no NAME.crt and NAME.key pair in " + empty},
		{"only a crt without key", Config{Dir: orphan}, "x.crt has no x.key"},
		{"only a key without crt", Config{Dir: onlyKey}, "y.key has no y.crt"},
		{"no dir", Config{Dir: filepath.Join(dir, "nodir")}, "nodir"},
	} {
		t.Run(tc.label, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v; want an error with %q", err, tc.want)
			}
		})
	}
}

// TestDirSkipsOrphans: a CA's ca.crt beside a pair (a cert-manager
// secret mounted as a directory) is skipped and reported, not fatal.
func TestDirSkipsOrphans(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "tls", time.Now().Add(time.Hour), "a.test")
	must(t, os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("ca"), 0o600))
	s, err := New(Config{Dir: dir})
	must(t, err)
	if sk := s.Skipped(); len(sk) != 1 || !strings.Contains(sk[0], "ca.crt has no ca.key") {
		t.Fatalf("skipped %q", sk)
	}
	if n := len(s.Certificates()); n != 1 {
		t.Fatalf("%d certificates; want 1", n)
	}
}

func hello(name string) *tls.ClientHelloInfo { return &tls.ClientHelloInfo{ServerName: name} }

func TestSNI(t *testing.T) {
	dir := t.TempDir()
	first := writePair(t, dir, "first", time.Now().Add(time.Hour), "a.test")
	writePair(t, dir, "second", time.Now().Add(time.Hour), "b.test", "*.wild.test")
	for _, strict := range []bool{false, true} {
		s, err := New(Config{Pairs: []Pair{first}, Dir: dir, StrictSNI: strict})
		must(t, err)
		for _, tc := range []struct {
			sni, want string // want "" means ErrUnknownName under strict
		}{
			{"a.test", "a.test"}, {"B.TEST.", "b.test"}, {"x.wild.test", "b.test"},
			{"wild.test", ""}, {"y.x.wild.test", ""}, {"other.test", ""}, {"", ""},
		} {
			c, err := s.GetCertificate(hello(tc.sni))
			switch {
			case tc.want == "" && strict:
				if !errors.Is(err, ErrUnknownName) {
					t.Errorf("strict %q: %v; want ErrUnknownName", tc.sni, err)
				}
				continue
			case tc.want == "":
				tc.want = "a.test" // the default: the first pair
			}
			if err != nil || c.Leaf.DNSNames[0] != tc.want {
				t.Errorf("strict=%v %q: %v, %v; want %s", strict, tc.sni, c, err, tc.want)
			}
		}
	}
}

func TestReloadKeepsTheOldOnABrokenFile(t *testing.T) {
	dir := t.TempDir()
	writePair(t, dir, "site", time.Now().Add(time.Hour), "a.test")
	s, err := New(Config{Dir: dir})
	must(t, err)
	before := s.Certificates()[0].NotAfter
	if s.Changed() {
		t.Fatal("changed without a change")
	}

	// A renewal.
	writePair(t, dir, "site", time.Now().Add(48*time.Hour), "a.test")
	bumpMtime(t, filepath.Join(dir, "site.crt"))
	if !s.Changed() {
		t.Fatal("a renewed file is not seen")
	}
	changed, err := s.Reload()
	if err != nil || !changed {
		t.Fatalf("Reload = %v, %v; want a change", changed, err)
	}
	renewed := s.Certificates()[0].NotAfter
	if !renewed.After(before) {
		t.Fatalf("not after %v, before %v: not the renewed certificate", renewed, before)
	}

	// Broken, then a key that does not match: both refused, the renewed
	// certificate serves on, and the error names the file.
	for _, breakIt := range []func(){
		func() {
			must(t, os.WriteFile(filepath.Join(dir, "site.crt"), []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), 0o600))
		},
		func() {
			other := writePair(t, t.TempDir(), "o", time.Now().Add(time.Hour), "a.test")
			b, _ := os.ReadFile(other.Key)
			must(t, os.WriteFile(filepath.Join(dir, "site.key"), b, 0o600))
			writePair(t, t.TempDir(), "unused", time.Now().Add(time.Hour), "x") // a cert file stays
		},
	} {
		breakIt()
		changed, err = s.Reload()
		if changed || err == nil || !strings.Contains(err.Error(), "site.") {
			t.Fatalf("Reload of a broken pair = %v, %v; want a refusal naming the file", changed, err)
		}
		if got := s.Certificates()[0].NotAfter; !got.Equal(renewed) {
			t.Fatalf("after a refused reload: not after %v; want %v", got, renewed)
		}
		c, err := s.GetCertificate(hello("a.test"))
		if err != nil || !c.Leaf.NotAfter.Equal(renewed) {
			t.Fatalf("served %v, %v; want the renewed certificate", c, err)
		}
	}
	// The directory emptied mid-renewal: nothing changes.
	must(t, os.Remove(filepath.Join(dir, "site.key")))
	if changed, err := s.Reload(); changed || err == nil {
		t.Fatalf("Reload of a half-empty dir = %v, %v; want a refusal", changed, err)
	}
	if len(s.Certificates()) != 1 {
		t.Fatal("the certificate was dropped")
	}
}

// bumpMtime makes sure a rewrite within the same clock tick is seen.
func bumpMtime(t *testing.T, path string) {
	t.Helper()
	future := time.Now().Add(time.Minute)
	must(t, os.Chtimes(path, future, future))
}

// FuzzLoadDir: whatever the files of a directory hold, New and Reload
// return a store or an error, never a panic.
func FuzzLoadDir(f *testing.F) {
	dir := f.TempDir()
	p := writePair(f, dir, "seed", time.Now().Add(time.Hour), "a.test")
	crt, _ := os.ReadFile(p.Cert)
	key, _ := os.ReadFile(p.Key)
	f.Add(crt, key, "site")
	f.Add(crt, crt, "x")
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key, "a.b")
	f.Add([]byte{}, []byte{}, "")
	f.Fuzz(func(t *testing.T, crt, key []byte, name string) {
		if strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return
		}
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, name+".crt"), crt, 0o600); err != nil {
			return
		}
		if err := os.WriteFile(filepath.Join(d, name+".key"), key, 0o600); err != nil {
			return
		}
		s, err := New(Config{Dir: d})
		if err != nil {
			return
		}
		if len(s.Certificates()) == 0 {
			t.Fatal("a store without certificates")
		}
		if _, err := s.GetCertificate(hello("")); err != nil {
			t.Fatal(err)
		}
		_, _ = s.Reload()
	})
}
