package node

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/gossip"
)

func TestKeyringFile(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	enc := func(k []byte) string { return base64.StdEncoding.EncodeToString(k) }
	path := filepath.Join(t.TempDir(), "keyring.json")
	cfg := Config{Security: Security{KeyringFile: path}}
	cfg.Gossip.SecretKey = k1
	if err := loadKeyring(&cfg, zerolog.Nop()); err != nil || !bytes.Equal(cfg.Gossip.SecretKey, k1) {
		t.Fatalf("missing file: %v, key %x; want the given key kept", err, cfg.Gossip.SecretKey)
	}
	if err := os.WriteFile(path, []byte(`["`+enc(k2)+`", "`+enc(k1)+`"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cfg.Gossip.SecretKey = bytes.Repeat([]byte{3}, 24)
	if err := loadKeyring(&cfg, zerolog.New(&logs)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cfg.Gossip.SecretKey, k2) || len(cfg.Gossip.ExtraKeys) != 1 || !bytes.Equal(cfg.Gossip.ExtraKeys[0], k1) {
		t.Fatalf("keys %x %x; want k2 primary, k1 extra", cfg.Gossip.SecretKey, cfg.Gossip.ExtraKeys)
	}
	if !strings.Contains(logs.String(), "not in the keyring file") || strings.Contains(logs.String(), enc(cfg.Gossip.SecretKey)) {
		t.Fatalf("log = %s; want a warning naming no key", logs.String())
	}
	for _, bad := range []string{`[]`, `{}`, `["not base64"]`, `["` + enc([]byte("short")) + `"]`, `not json`} {
		if _, err := parseKeyringFile([]byte(bad)); err == nil {
			t.Errorf("keyring %s: no error", bad)
		}
	}
}

func FuzzKeyState(f *testing.F) {
	k := bytes.Repeat([]byte{7}, 32)
	f.Add(gossip.KeyID(k), append([]byte{intentPrimary}, k...))
	f.Add("x", []byte{intentInstalled})
	f.Add("", encodeKeyStatus(gossip.KeyID(k), []string{gossip.KeyID(k)}))
	f.Add("", []byte(`["`+base64.StdEncoding.EncodeToString(k)+`"]`))
	f.Fuzz(func(t *testing.T, id string, v []byte) {
		if op, key, err := decodeIntent(id, v); err == nil && (gossip.KeyID(key) != id || (op != intentInstalled && op != intentPrimary)) {
			t.Fatalf("intent %q accepted with op %d, key id %s", id, op, gossip.KeyID(key))
		}
		if p, ids, err := decodeKeyStatus(v); err == nil {
			if got := encodeKeyStatus(p, ids); !bytes.Equal(got, v) {
				t.Fatalf("status %q re-encodes as %q", v, got)
			}
		}
		if keys, err := parseKeyringFile(v); err == nil && (len(keys) == 0 || len(keys) > gossip.MaxKeys) {
			t.Fatalf("keyring of %d keys accepted", len(keys))
		}
	})
}

// TestKeyRotationInProcess rotates the key of three in-process nodes
// through three different nodes' admin APIs, under the race detector.
func TestKeyRotationInProcess(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	dir := t.TempDir()
	// memberlist may log from a probe still in flight after Shutdown has
	// returned, which a test writer turns into a panic; a buffer doesn't.
	logs := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	nodes := newTestCluster(t, 3, func(i int, c *Config) {
		c.Logger = zerolog.New(logs).Level(zerolog.WarnLevel)
		c.Gossip.SecretKey = k1
		c.KeyringFile = filepath.Join(dir, c.Name+".json")
	})
	waitFor(t, 20*time.Second, "3 members", func() (bool, string) {
		for _, n := range nodes {
			if got := len(n.liveKeyStatus()); got != 3 {
				return false, n.Name() + " sees " + strconv.Itoa(got)
			}
			for _, s := range n.liveKeyStatus() {
				if !s.Known {
					return false, s.Name + "'s key status unknown"
				}
			}
		}
		return true, ""
	})
	step := func(n *Node, op string, key []byte, want int) string {
		t.Helper()
		code, b := call(t, "POST", adminURL(n, "/v1/keys"), `{"op": "`+op+`", "key": "`+base64.StdEncoding.EncodeToString(key)+`"}`)
		if code != want {
			t.Fatalf("%s through %s = %d %s; want %d", op, n.Name(), code, b, want)
		}
		return string(b)
	}
	step(nodes[0], "use", bytes.Repeat([]byte{9}, 32), 409) // installed nowhere

	// A node deaf to the steps is reported, and holds up the next one.
	nodes[2].sec.ignoreIntentsForTest.Store(true)
	nodes[0].sec.ackTimeoutForTest = 300 * time.Millisecond
	k0 := bytes.Repeat([]byte{5}, 32)
	if b := step(nodes[0], "install", k0, 200); !strings.Contains(b, `"complete": false`) || !strings.Contains(b, `"missing": [
    "n2"
  ]`) {
		t.Fatalf("install with a deaf n2: %s; want n2 missing", b)
	}
	if b := step(nodes[1], "use", k0, 409); !strings.Contains(b, "n2") {
		t.Fatalf("use while n2 lacks the key: %s; want n2 named", b)
	}
	nodes[2].sec.ignoreIntentsForTest.Store(false)
	step(nodes[0], "remove", k0, 200)
	if b := step(nodes[0], "install", k2, 200); !strings.Contains(b, `"complete": true`) {
		t.Fatalf("install: %s", b)
	}
	step(nodes[1], "remove", k1, 409) // still primary
	if b := step(nodes[1], "use", k2, 200); !strings.Contains(b, `"complete": true`) {
		t.Fatalf("use: %s", b)
	}
	// n2 refuses the remove until it has heard every node's new primary
	// (key status gossip): the refusal is right, the test waits it out.
	var code int
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, b = call(t, "POST", adminURL(nodes[2], "/v1/keys"), `{"op": "remove", "key": "`+base64.StdEncoding.EncodeToString(k1)+`"}`)
		if code != 409 || !strings.Contains(string(b), "primary_on") || time.Now().After(deadline) {
			break
		}
	}
	if code != 200 || !strings.Contains(string(b), `"complete": true`) {
		t.Fatalf("remove through n2 = %d %s; want 200, complete", code, b)
	}
	for _, n := range nodes {
		p, all, err := n.cluster.Keys()
		if err != nil || !bytes.Equal(p, k2) || len(all) != 1 {
			t.Fatalf("%s keys: %x, %d, %v; want k2 alone", n.Name(), p, len(all), err)
		}
		b, err := os.ReadFile(n.cfg.KeyringFile)
		if err != nil || !strings.Contains(string(b), base64.StdEncoding.EncodeToString(k2)) || strings.Contains(string(b), base64.StdEncoding.EncodeToString(k1)) {
			t.Fatalf("%s keyring file %s, %v; want k2 alone", n.Name(), b, err)
		}
	}
	waitFor(t, 5*time.Second, "still 3 members", converged(nodes, 0))
}
