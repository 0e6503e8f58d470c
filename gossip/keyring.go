package gossip

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// The keyring: memberlist encrypts with the primary key and tries every
// installed key on what it receives, so a mesh changes its key live in
// three steps, each taken by every node before the next one starts:
// install the new key, make it primary, remove the old one (Serf's `keys
// install / use / remove`). Which node takes a step when is the caller's
// business (node carries the steps through the replicator); these methods
// only change this node's keyring. memberlist's Keyring has its own lock.

// MaxKeys bounds the keyring. A rotation needs two keys; the bound keeps
// a keyring, its file and its replicated status small.
const MaxKeys = 8

// ErrNoKeyring is returned by the key methods of a Cluster started
// without a SecretKey: memberlist decides at start whether gossip is
// encrypted, so a keyring cannot be added to a running mesh.
var ErrNoKeyring = errors.New("gossip is not encrypted (no gossip key): there is no keyring to change")

// KeyID names a key without revealing it: the first 8 bytes of its
// SHA-256, in hex. Logs and reports use it; the key itself is never logged.
func KeyID(key []byte) string {
	s := sha256.Sum256(key)
	return hex.EncodeToString(s[:8])
}

func validateKey(k []byte) error {
	if err := memberlist.ValidateKey(k); err != nil {
		return fmt.Errorf("key of %d bytes: want 16, 24 or 32", len(k))
	}
	return nil
}

// ValidateKey checks that k is an AES key memberlist takes.
func ValidateKey(k []byte) error { return validateKey(k) }

// newKeyring builds the keyring of cfg, nil without a SecretKey.
func newKeyring(cfg Config) (*memberlist.Keyring, error) {
	if cfg.SecretKey == nil {
		return nil, nil
	}
	kr, err := memberlist.NewKeyring(cfg.ExtraKeys, cfg.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	return kr, nil
}

// Keys returns this node's keys, the primary first, as copies. Before
// Start it returns the configured ones.
func (c *Cluster) Keys() (primary []byte, all [][]byte, err error) {
	kr := c.keyring
	if kr == nil {
		return nil, nil, ErrNoKeyring
	}
	primary = bytes.Clone(kr.GetPrimaryKey())
	all = append(all, primary)
	for _, k := range kr.GetKeys() {
		if !bytes.Equal(k, primary) {
			all = append(all, bytes.Clone(k))
		}
	}
	return primary, all, nil
}

// InstallKey adds key to the keyring; messages under it are read from
// now on, and ours stay under the primary. Installing a key held is a
// no-op.
func (c *Cluster) InstallKey(key []byte) error {
	if c.keyring == nil {
		return ErrNoKeyring
	}
	if err := validateKey(key); err != nil {
		return fmt.Errorf("install key: %w", err)
	}
	_, all, _ := c.Keys()
	for _, k := range all {
		if bytes.Equal(k, key) {
			return nil
		}
	}
	if len(all) >= MaxKeys {
		return fmt.Errorf("install key: the keyring holds %d keys already; remove one first", len(all))
	}
	if err := c.keyring.AddKey(key); err != nil {
		return fmt.Errorf("install key: %w", err)
	}
	c.log.Info().Str("key_id", KeyID(key)).Msg("gossip key installed")
	return nil
}

// ErrKeyNotInstalled is returned by UseKey for a key not in the keyring.
var ErrKeyNotInstalled = errors.New("key is not installed")

// ErrPrimaryKey is returned by RemoveKey for the primary key.
var ErrPrimaryKey = errors.New("key is the primary key")

// UseKey makes an installed key the primary: our messages are encrypted
// with it from now on. Every peer must hold it already, or they stop
// hearing us.
func (c *Cluster) UseKey(key []byte) error {
	if c.keyring == nil {
		return ErrNoKeyring
	}
	primary, all, _ := c.Keys()
	if bytes.Equal(primary, key) {
		return nil
	}
	held := false
	for _, k := range all {
		held = held || bytes.Equal(k, key)
	}
	if !held {
		return fmt.Errorf("use key %s: %w", KeyID(key), ErrKeyNotInstalled)
	}
	if err := c.keyring.UseKey(key); err != nil {
		return fmt.Errorf("use key %s: %w", KeyID(key), err)
	}
	c.log.Info().Str("key_id", KeyID(key)).Msg("gossip primary key changed")
	return nil
}

// RemoveKey drops a key from the keyring: messages under it are refused
// from now on. The primary key cannot be removed; removing a key not held
// is a no-op.
func (c *Cluster) RemoveKey(key []byte) error {
	if c.keyring == nil {
		return ErrNoKeyring
	}
	primary, all, _ := c.Keys()
	if bytes.Equal(primary, key) {
		return fmt.Errorf("remove key %s: %w", KeyID(key), ErrPrimaryKey)
	}
	held := false
	for _, k := range all {
		held = held || bytes.Equal(k, key)
	}
	if !held {
		return nil
	}
	if err := c.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("remove key %s: %w", KeyID(key), err)
	}
	c.log.Info().Str("key_id", KeyID(key)).Msg("gossip key removed")
	return nil
}
