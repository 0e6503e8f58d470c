package ring

import (
	"slices"
	"testing"
)

// Golden placement for a fixed set, config and seed. A change here means
// every node of an existing mesh would route differently from nodes built
// before it: a library bump, a hash change or an encoding change. If that
// is intended, bump configDomain too, so mixed meshes see different config
// fingerprints, and update these values. (The set changed once without
// that: when IDs were limited to [A-Za-z0-9._:-], "[::1]:8080" and
// "ünïcødé-后端" became "::1:8080" and "a.b_c-d"; the placement rule
// did not change.)
var (
	goldenConfig = Config{Partitions: 4093, ReplicationFactor: 50, Load: 1.25, Seed: "golden"}
	goldenIDs    = []string{"10.0.0.1:80", "10.0.0.1:801", "node1", "node11", "web-1", "web-11", "::1:8080", "a.b_c-d"}
)

const (
	goldenConfigFP = 0x1943c7fb622fccea
	goldenRingFP   = 0xcd3877727abf520e
)

var goldenKeys = []struct {
	key       string
	owner     string
	partition int
}{
	{"10.1.2.3", "10.0.0.1:801", 2326},
	{"192.168.0.1", "node1", 2290},
	{"session-0123456789abcdef", "10.0.0.1:801", 1067},
	{"", "a.b_c-d", 3925},
	{"key", "web-1", 779},
}

func TestGolden(t *testing.T) {
	r := mustBuild(t, goldenConfig, goldenIDs)
	if got := r.Config().Fingerprint(); got != goldenConfigFP {
		t.Errorf("config fingerprint = %#x; want %#x", got, uint64(goldenConfigFP))
	}
	if got := r.Fingerprint(); got != goldenRingFP {
		t.Errorf("ring fingerprint = %#x; want %#x", got, uint64(goldenRingFP))
	}
	for _, g := range goldenKeys {
		id, p, err := r.LocateString(g.key)
		if err != nil || id != g.owner || p != g.partition {
			t.Errorf("LocateString(%q) = %q, %d, %v; want %q, %d", g.key, id, p, err, g.owner, g.partition)
		}
	}
}

// The v2 golden: the same config under v2, over the golden IDs and 600
// more, so that most groups have a library ring of their own. The rule
// for changing it is the one above, with configDomainV2.
const (
	goldenV2ConfigFP = 0x8cb107ced94a977c
	goldenV2RingFP   = 0xfec13e731acc1b09
)

var goldenV2Keys = []struct {
	key       string
	owner     string
	partition int
}{
	{"10.1.2.3", "b303", 2326},
	{"192.168.0.1", "b123", 2290},
	{"session-0123456789abcdef", "b423", 1067},
	{"", "b1", 3925},
	{"key", "b300", 779},
}

func TestGoldenV2(t *testing.T) {
	cfg := goldenConfig
	cfg.Algorithm = AlgorithmV2
	r := mustBuild(t, cfg, append(slices.Clone(goldenIDs), seqIDs(600)...))
	if got := r.Config().Fingerprint(); got != goldenV2ConfigFP {
		t.Errorf("config fingerprint = %#x; want %#x", got, uint64(goldenV2ConfigFP))
	}
	if got := r.Fingerprint(); got != goldenV2RingFP {
		t.Errorf("ring fingerprint = %#x; want %#x", got, uint64(goldenV2RingFP))
	}
	for _, g := range goldenV2Keys {
		id, p, err := r.LocateString(g.key)
		if err != nil || id != g.owner || p != g.partition {
			t.Errorf("LocateString(%q) = %q, %d, %v; want %q, %d", g.key, id, p, err, g.owner, g.partition)
		}
	}
}
