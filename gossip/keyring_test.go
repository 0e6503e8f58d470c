package gossip

import (
	"bytes"
	"errors"
	"testing"
)

func TestKeyringSteps(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	cfg := LocalConfig()
	cfg.Name = "a"
	cfg.SecretKey = k1
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UseKey(k2); !errors.Is(err, ErrKeyNotInstalled) {
		t.Fatalf("use of a key not installed: %v; want ErrKeyNotInstalled", err)
	}
	if err := c.InstallKey([]byte("short")); err == nil {
		t.Fatal("install of a 5-byte key: no error")
	}
	for _, step := range []func([]byte) error{c.InstallKey, c.InstallKey, c.UseKey, c.UseKey} {
		if err := step(k2); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RemoveKey(k2); !errors.Is(err, ErrPrimaryKey) {
		t.Fatalf("remove of the primary: %v; want ErrPrimaryKey", err)
	}
	if err := c.RemoveKey(k1); err != nil {
		t.Fatal(err)
	}
	primary, all, err := c.Keys()
	if err != nil || !bytes.Equal(primary, k2) || len(all) != 1 {
		t.Fatalf("keys = %x %x %v; want only k2", primary, all, err)
	}

	cfg.SecretKey = nil
	plain, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.InstallKey(k2); !errors.Is(err, ErrNoKeyring) {
		t.Fatalf("install without a gossip key: %v; want ErrNoKeyring", err)
	}
	cfg.ExtraKeys = [][]byte{k2}
	if _, err := New(cfg); err == nil {
		t.Fatal("extra keys without a secret key: no error")
	}
}
