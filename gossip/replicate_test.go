package gossip

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestKindReplication: an opaque kind registered by a consumer spreads like
// the catalog, a repeat of an owned write is no write, and removing the
// backend it is scoped to drops it everywhere and refuses more of it.
func TestKindReplication(t *testing.T) {
	cs := newTestCluster(t, 3, func(_ int, cfg *Config) { cfg.Kinds = []KindSpec{viewSpec()} })
	if _, err := cs[0].Upsert("b1", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, cs, 5*time.Second)
	var written []Entry
	for _, c := range cs {
		e, err := c.Put(kindView, "b1\x00"+c.LocalName(), []byte("down"))
		if err != nil {
			t.Fatal(err)
		}
		if e.Origin != c.LocalName() || e.Version == 0 {
			t.Fatalf("entry not stamped: %+v", e)
		}
		written = append(written, e)
	}
	waitFor(t, 5*time.Second, "views everywhere", func() bool {
		for _, c := range cs {
			if len(c.Entries(kindView)) != 3 || c.Digest(kindView) != cs[0].Digest(kindView) {
				return false
			}
		}
		return true
	})
	if again, err := cs[1].Put(kindView, written[1].Key, []byte("down")); err != nil || again.Version != written[1].Version {
		t.Fatalf("same owned value rewritten: %+v %v", again, err)
	}

	if _, err := cs[2].SetState("b1", StateRemoved); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "views dropped with the backend", func() bool {
		for _, c := range cs {
			if len(c.Entries(kindView)) != 0 {
				return false
			}
		}
		return true
	})
	if _, err := cs[0].Put(kindView, "b1\x00"+cs[0].LocalName(), []byte("up")); err == nil {
		t.Fatal("a view of a removed backend was written")
	}
}

// TestOwnedEntryRefuted: an entry of ours from an earlier life that is
// newer than what we now hold is answered with our current value.
func TestOwnedEntryRefuted(t *testing.T) {
	cs := newTestCluster(t, 2, func(_ int, cfg *Config) { cfg.Kinds = []KindSpec{viewSpec()} })
	if _, err := cs[0].Upsert("b1", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, cs, 5*time.Second)
	key := "b1\x00" + cs[0].LocalName()
	if _, err := cs[0].Put(kindView, key, []byte("up")); err != nil {
		t.Fatal(err)
	}
	stale := Entry{Kind: kindView, Key: key, Origin: cs[0].LocalName(), Value: []byte("down: old life"),
		Version: uint64(time.Now().Add(time.Minute).UnixMilli()) << 16}
	cs[0].notifyMsg(encodeEntryMsg(stale))
	waitFor(t, 5*time.Second, "refutation everywhere", func() bool {
		for _, c := range cs {
			e, ok := c.Get(kindView, key)
			if !ok || string(e.Value) != "up" || e.Version <= stale.Version {
				return false
			}
		}
		return true
	})
}

// syncBuffer is a bytes.Buffer for a logger written from memberlist's
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOlderPeerRefusedByName: a message of wire version 2 (the release
// before one replicator) is refused, counted by reason, and logged naming
// both versions, so an operator mid-upgrade reads why state doesn't cross.
func TestOlderPeerRefusedByName(t *testing.T) {
	var logs syncBuffer
	cfg := testConfig(t, "n1")
	cfg.Logger = zerolog.New(&logs)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.notifyMsg(encodeRecordV2(Record{ID: "a", Addr: "h:1", State: StateActive, Version: 1, Origin: "old"}))
	if got := counterValue(c.m.rejected.WithLabelValues(reasonVersion)); got != 1 {
		t.Fatalf("version rejections = %v; want 1", got)
	}
	if !strings.Contains(logs.String(), "version 2, this node 3") {
		t.Fatalf("log does not name both versions:\n%s", logs.String())
	}
	if len(c.Records()) != 0 {
		t.Fatal("a version 2 record was merged")
	}
}
