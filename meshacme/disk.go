package meshacme

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

func pemChain(chain [][]byte) []byte {
	var b []byte
	for _, c := range chain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	return b
}

func pemKey(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Path is where a domain's certificate lives under dir: one PEM file,
// key then chain, readable by the owner only.
func Path(dir, domain string) string { return filepath.Join(dir, domain+".pem") }

// Save writes c to path atomically (a temporary file renamed), so a
// crash never leaves half a file for the next start to refuse.
func Save(path string, c *Cert) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	data := append(pemKey(c.KeyDER), pemChain(c.Chain)...)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Load reads a file Save wrote.
func Load(path string) (*Cert, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(data) > 4*MaxBundle {
		return nil, fmt.Errorf("%s: too large", path)
	}
	var key []byte
	var chain [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY":
			key = b.Bytes
		case "CERTIFICATE":
			chain = append(chain, b.Bytes)
		}
	}
	if key == nil || len(chain) == 0 {
		return nil, errors.New(path + ": want a PRIVATE KEY and at least one CERTIFICATE")
	}
	return NewCert(key, chain)
}
