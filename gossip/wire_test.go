package gossip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func maxEntry() Entry {
	return Entry{
		Kind:    255,
		Key:     strings.Repeat("k", maxKeyLen),
		Version: math.MaxUint64,
		Origin:  strings.Repeat("o", maxOriginLen),
		Deleted: true,
		Value:   bytes.Repeat([]byte{0xff}, maxValueLen),
	}
}

func sampleEntries() []Entry {
	return []Entry{
		recordEntry(Record{ID: "a", Addr: "10.0.0.1:80", State: StateActive, Version: 1, Origin: "n1"}),
		recordEntry(Record{ID: "b", Addr: "[::1]:8080", State: StateDraining, Version: 1 << 50, Origin: "n2"}),
		recordEntry(Record{ID: "c", Addr: "backend.example:443", State: StateRemoved, Version: 300, Origin: "node-3"}),
		{Kind: kindView, Key: "a\x00n1", Version: 7, Origin: "n1"},
		{Kind: kindView, Key: "a\x00n2", Version: 8, Origin: "n2", Value: []byte("down: refused")},
		maxEntry(),
	}
}

func TestEntryMessageFitsPacketBudget(t *testing.T) {
	msg := encodeEntryMsg(maxEntry())
	if len(msg) > packetBudget || len(msg) != maxEntryMsg {
		t.Fatalf("max entry message = %d bytes (computed %d); budget %d", len(msg), maxEntryMsg, packetBudget)
	}
	// memberlist's gossip path with encryption: UDPBufferSize 1400 minus the
	// compound header (2) and encryption (29) is the limit, with a
	// per-message overhead of 2+1 for user messages.
	q := &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 10 }, RetransmitMult: 1}
	q.QueueBroadcast(&entryBroadcast{name: "x", msg: msg})
	got := q.GetBroadcasts(3, 1400-2-29)
	if len(got) != 1 || !bytes.Equal(got[0], msg) {
		t.Fatalf("queue did not hand out a max-size entry message (%d bytes)", len(msg))
	}
	for _, e := range sampleEntries() {
		if n := len(encodeEntryMsg(e)); n != 2+entrySize(e) {
			t.Errorf("entrySize(%v) = %d; encoded %d", e, entrySize(e), n-2)
		}
	}
}

func TestWireRoundTrip(t *testing.T) {
	for _, e := range sampleEntries() {
		got, err := decodeEntryMsg(encodeEntryMsg(e))
		if err != nil || !got.equal(e) {
			t.Errorf("entry round trip: got %v, %v; want %v", got, err, e)
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 1000 {
		for _, e := range randomEntries(rng, 3) {
			if got, err := decodeEntryMsg(encodeEntryMsg(e)); err != nil || !got.equal(e) {
				t.Fatalf("entry round trip: got %v, %v; want %v", got, err, e)
			}
		}
		st := mergeAll(randomEntries(rng, 8)).state(true)
		sender, got, err := decodeStateMsg(encodeStateMsg("n", st))
		if err != nil || sender != "n" || len(got) != len(st) {
			t.Fatalf("state round trip: got %v, %v; want %v", got, err, st)
		}
		for i := range got {
			if !got[i].equal(st[i]) {
				t.Fatalf("state round trip: entry %d = %v; want %v", i, got[i], st[i])
			}
		}
	}
	if _, got, err := decodeStateMsg(encodeStateMsg("n1", nil)); err != nil || len(got) != 0 {
		t.Errorf("empty state: %v %v", got, err)
	}
	for _, d := range []uint64{0, 1, math.MaxUint64} {
		if got, err := decodeAckMsg(encodeAckMsg(d)); err != nil || got != d {
			t.Errorf("ack round trip %x: %x %v", d, got, err)
		}
	}
}

// encodeRecordV2 is a catalog record as wire version 2 sent it.
func encodeRecordV2(r Record) []byte {
	b := []byte{2, 1}
	b = appendString(b, r.ID)
	b = appendString(b, r.Addr)
	b = append(b, byte(r.State))
	b = binary.AppendUvarint(b, r.Version)
	return appendString(b, r.Origin)
}

func TestWireRejects(t *testing.T) {
	valid := encodeEntryMsg(sampleEntries()[0])
	withFlags := func(f byte) []byte {
		b := bytes.Clone(valid)
		b[2+1+1+1+1+1+1+1] = f // version, type, kind, len "a", "a", version 1, len "n1", "n1"
		return b
	}
	nonMinimal := []byte{wireVersion, msgEntry, 1, 0x81, 0x00, 'a'}
	tests := []struct {
		name   string
		b      []byte
		reason string
	}{
		{"empty", nil, reasonTruncated},
		{"one byte", []byte{1}, reasonTruncated},
		{"future version", append([]byte{wireVersion + 1}, valid[1:]...), reasonVersion},
		{"version 2 record", encodeRecordV2(Record{ID: "a", Addr: "h:1", State: StateActive, Version: 1, Origin: "n"}), reasonVersion},
		{"unknown type", append([]byte{wireVersion, 9}, valid[2:]...), reasonType},
		{"truncated", valid[:len(valid)-1], reasonTruncated},
		{"trailing", append(bytes.Clone(valid), 0), reasonTrailing},
		{"unknown flags", withFlags(2), reasonMalformed},
		{"kind 0", append([]byte{wireVersion, msgEntry, 0}, valid[3:]...), reasonMalformed},
		{"non-minimal uvarint", nonMinimal, reasonMalformed},
		{"key too long", append([]byte{wireVersion, msgEntry, 1}, binary.AppendUvarint(nil, maxKeyLen+1)...), reasonOversized},
		{"oversized", make([]byte, maxMsgSize+1), reasonOversized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeEntryMsg(tt.b)
			if err == nil {
				t.Fatal("decoded garbage")
			}
			if got := rejectReason(err); got != tt.reason {
				t.Fatalf("reason = %q (%v); want %q", got, err, tt.reason)
			}
		})
	}
	if _, err := decodeEntryMsg(encodeRecordV2(Record{ID: "a", Addr: "h:1", State: StateActive, Version: 1, Origin: "n"})); err == nil ||
		!strings.Contains(err.Error(), "version 2, this node 3") {
		t.Errorf("a version 2 message's error %q does not name both versions", err)
	}

	es := sampleEntries()
	huge := append([]byte{wireVersion, msgState, 2, 'n', '1'}, binary.AppendUvarint(nil, 1<<40)...)
	st := encodeStateMsg("n1", es[:2])
	for name, b := range map[string][]byte{
		"unsorted": encodeStateMsg("n1", []Entry{es[1], es[0]}), "duplicate": encodeStateMsg("n1", []Entry{es[0], es[0]}),
		"kinds unsorted": encodeStateMsg("n1", []Entry{es[3], es[0]}),
		"huge count":     huge, "truncated": st[:len(st)-3], "entry type": valid,
		"bad sender": encodeStateMsg("a b", nil),
	} {
		if _, _, err := decodeStateMsg(b); err == nil {
			t.Errorf("state %s: decoded", name)
		}
	}
	if _, err := decodeAckMsg([]byte{wireVersion, 3, 0}); err == nil {
		t.Error("short ack decoded")
	}
	var de *decodeError
	if _, err := decodeAckMsg(nil); !errors.As(err, &de) {
		t.Errorf("ack error %v is not a decodeError", err)
	}
}

func TestMetaEncoding(t *testing.T) {
	long := Meta{
		Role: RoleBalancer, State: NodeLeaving,
		ProxyAddr: strings.Repeat("p", maxMetaAddrLen), AdminAddr: strings.Repeat("a", maxMetaAddrLen),
		ConfigFP: math.MaxUint64, RingFP: math.MaxUint64,
	}
	b, err := long.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 512 || len(b) != maxMetaLen {
		t.Fatalf("longest meta = %d bytes; want %d, at most 512", len(b), maxMetaLen)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != long {
		t.Fatalf("round trip = %v, %v", got, err)
	}
	short := Meta{Role: RoleBalancer, State: NodeActive, ProxyAddr: "10.0.0.1:8080", AdminAddr: "10.0.0.1:9090", ConfigFP: 7, RingFP: 9}
	if b, _ := short.Encode(); len(b) > 64 {
		t.Errorf("typical meta = %d bytes; want tens", len(b))
	}
	for name, m := range map[string]Meta{
		"proxy too long": {Role: RoleBalancer, State: NodeActive, ProxyAddr: strings.Repeat("p", 65)},
		"admin too long": {Role: RoleBalancer, State: NodeActive, AdminAddr: strings.Repeat("p", 1000)},
		"no role":        {State: NodeActive},
		"bad state":      {Role: RoleBalancer, State: 9},
	} {
		if b, err := m.Encode(); err == nil {
			t.Errorf("%s: encoded %d bytes", name, len(b))
		}
	}
	for name, b := range map[string][]byte{
		"empty": nil, "future": {3, 1, 1, 0, 0}, "truncated v2": {2, 1, 1, 0, 0}, "trailing": append(bytes.Clone(b), 0),
		"unknown flag": append(bytes.Clone(b[:len(b)-1]), 2),
		"truncated":    b[:len(b)-1], "oversized": make([]byte, 600),
	} {
		if _, err := DecodeMeta(b); err == nil {
			t.Errorf("DecodeMeta(%s) succeeded", name)
		}
	}
}

// encodeV1 writes m as the release before wrote it (meta version 1: no
// flags byte), for the rolling-upgrade tests.
func (m Meta) encodeV1() []byte {
	b, _ := m.Encode()
	b = b[:len(b)-1]
	b[0] = metaVersionV1
	return b
}

// A node of the release before publishes version 1 metas: they decode,
// readiness unknown, so a mesh can be upgraded one node at a time.
func TestMetaVersion1(t *testing.T) {
	old := Meta{Role: RoleBalancer, State: NodeDraining, ProxyAddr: "10.0.0.1:8080", AdminAddr: "10.0.0.1:9901", ConfigFP: 7, RingFP: 9}
	got, err := DecodeMeta(old.encodeV1())
	want := old
	want.ReadyUnknown = true
	if err != nil || got != want {
		t.Fatalf("DecodeMeta(v1) = %+v, %v; want %+v", got, err, want)
	}
	if _, err := DecodeMeta(append(old.encodeV1(), metaReady)); err == nil {
		t.Error("a version 1 meta with a flags byte decoded")
	}
	for _, ready := range []bool{false, true} {
		m := old
		m.Ready = ready
		b, _ := m.Encode()
		if got, err := DecodeMeta(b); err != nil || got != m {
			t.Errorf("round trip ready=%v = %+v, %v", ready, got, err)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	for _, e := range sampleEntries() {
		f.Add(encodeEntryMsg(e))
	}
	f.Add([]byte{wireVersion, 1, 1, 0x81, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntryMsg(b)
		if err != nil {
			return
		}
		if got := encodeEntryMsg(e); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %v = %x; want %x", e, got, b)
		}
		if len(b) > packetBudget {
			t.Fatalf("decoded a %d-byte entry", len(b))
		}
		// Whatever decodes, the store takes or refuses without panicking.
		_, _ = testStore().Merge(e, testNow)
	})
}

func FuzzDecodeState(f *testing.F) {
	f.Add(encodeStateMsg("n1", sampleEntries()))
	f.Add(encodeStateMsg("n1", nil))
	f.Add(encodeStateMsg("n2", sampleEntries()[:1]))
	f.Fuzz(func(t *testing.T, b []byte) {
		sender, es, err := decodeStateMsg(b)
		if err != nil {
			return
		}
		if got := encodeStateMsg(sender, es); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding = %x; want %x", got, b)
		}
		s := testStore()
		for _, e := range es {
			_, _ = s.Merge(e, testNow)
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	for _, m := range []Meta{
		{Role: RoleBalancer, State: NodeActive},
		{Role: RoleBalancer, State: NodeDraining, ProxyAddr: "10.0.0.1:80", AdminAddr: "[::1]:9", ConfigFP: 1, RingFP: 2},
	} {
		b, _ := m.Encode()
		f.Add(b)
		f.Add(m.encodeV1())
		m.Ready = true
		b, _ = m.Encode()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		got, err := m.Encode()
		if m.ReadyUnknown {
			got = m.encodeV1()
		}
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %+v = %x, %v; want %x", m, got, err, b)
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	f.Add(encodeAckMsg(0))
	f.Add(encodeAckMsg(math.MaxUint64))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeAckMsg(b)
		if err != nil {
			return
		}
		if got := encodeAckMsg(d); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding = %x; want %x", got, b)
		}
	})
}

// TestFullStateFitsPushPull: the kinds the node registers, each at its
// bounds, plus the floors, fit memberlist's push/pull cap. The node's
// kinds are checked against the same sum in the node package.
func TestFullStateFitsPushPull(t *testing.T) {
	const memberlistStateCap = 20 << 20 // memberlist's push/pull limit
	cat := catalogSpec(validateID).withDefaults()
	perRecord := 1 + 2 + 255 + binary.MaxVarintLen64 + 2 + maxOriginLen + 1 + 2 + cat.MaxValue
	if perRecord > maxRecordSize {
		t.Fatalf("a record at every limit is %d bytes; the catalog budgets %d", perRecord, maxRecordSize)
	}
	if n := cat.MaxBytes + maxFloors*perRecord + 16 + maxOriginLen; n >= memberlistStateCap-KindsBudget {
		t.Fatalf("catalog and floors = %d bytes; with %d for the node's kinds that passes memberlist's %d", n, KindsBudget, memberlistStateCap)
	}
}
