package gossip

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func maxRecord() Record {
	return Record{
		ID:      strings.Repeat("i", maxIDLen),
		Addr:    strings.Repeat("h", maxAddrLen-6) + ":65535",
		State:   StateDraining,
		Version: math.MaxUint64,
		Origin:  strings.Repeat("o", maxOriginLen),
	}
}

func sampleRecords() []Record {
	return []Record{
		{ID: "a", Addr: "10.0.0.1:80", State: StateActive, Version: 1, Origin: "n1"},
		{ID: "b", Addr: "[::1]:8080", State: StateDraining, Version: 1 << 50, Origin: "n2"},
		{ID: "c", Addr: "backend.example:443", State: StateRemoved, Version: 300, Origin: "node-3"},
		maxRecord(),
	}
}

func TestRecordMessageFitsPacketBudget(t *testing.T) {
	msg := encodeRecordMsg(maxRecord())
	if len(msg) > packetBudget || len(msg) > maxRecordMsg {
		t.Fatalf("max record message = %d bytes; budget %d", len(msg), packetBudget)
	}
	// memberlist's gossip path with encryption: UDPBufferSize 1400 minus the
	// compound header (2) and encryption (29) is the limit, with a
	// per-message overhead of 2+1 for user messages.
	q := &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 10 }, RetransmitMult: 1}
	q.QueueBroadcast(&recordBroadcast{name: "x", msg: msg})
	got := q.GetBroadcasts(3, 1400-2-29)
	if len(got) != 1 || !bytes.Equal(got[0], msg) {
		t.Fatalf("queue did not hand out a max-size record message (%d bytes)", len(msg))
	}
}

func TestWireRoundTrip(t *testing.T) {
	for _, r := range sampleRecords() {
		got, err := decodeRecordMsg(encodeRecordMsg(r))
		if err != nil || got != r {
			t.Errorf("record round trip: got %v, %v; want %v", got, err, r)
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 1000 {
		for _, r := range randomRecords(rng, 3) {
			if got, err := decodeRecordMsg(encodeRecordMsg(r)); err != nil || got != r {
				t.Fatalf("record round trip: got %v, %v; want %v", got, err, r)
			}
		}
		c := mergeAll(randomRecords(rng, 8))
		if _, got, err := decodeStateMsg(encodeStateMsg("n", c.state())); err != nil || !reflect.DeepEqual(got, c.state()) {
			t.Fatalf("state round trip: got %v, %v; want %v", got, err, c.state())
		}
	}
	recs := sampleRecords()
	sender, got, err := decodeStateMsg(encodeStateMsg("n1", recs))
	if err != nil || sender != "n1" || !reflect.DeepEqual(got, recs) {
		t.Errorf("state round trip: %q %v %v", sender, got, err)
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

func TestWireRejects(t *testing.T) {
	valid := encodeRecordMsg(sampleRecords()[0])
	withState := func(s byte) []byte {
		b := bytes.Clone(valid)
		b[2+1+1+1+11] = s // version, type, len "a", "a", len addr, addr (11 bytes)
		return b
	}
	nonMinimal := []byte{wireVersion, msgRecord, 0x81, 0x00, 'a'}
	tests := []struct {
		name   string
		b      []byte
		reason string
	}{
		{"empty", nil, reasonTruncated},
		{"one byte", []byte{1}, reasonTruncated},
		{"future version", append([]byte{2}, valid[1:]...), reasonVersion},
		{"unknown type", append([]byte{1, 9}, valid[2:]...), reasonType},
		{"truncated", valid[:len(valid)-1], reasonTruncated},
		{"trailing", append(bytes.Clone(valid), 0), reasonTrailing},
		{"unknown state", withState(7), reasonMalformed},
		{"zero state", withState(0), reasonMalformed},
		{"non-minimal uvarint", nonMinimal, reasonMalformed},
		{"id too long", append([]byte{1, 1}, binary.AppendUvarint(nil, 256)...), reasonOversized},
		{"oversized", make([]byte, maxMsgSize+1), reasonOversized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeRecordMsg(tt.b)
			if err == nil {
				t.Fatal("decoded garbage")
			}
			if got := rejectReason(err); got != tt.reason {
				t.Fatalf("reason = %q (%v); want %q", got, err, tt.reason)
			}
		})
	}

	st := encodeStateMsg("n1", sampleRecords()[:2])
	unsorted := encodeStateMsg("n1", []Record{sampleRecords()[1], sampleRecords()[0]})
	dup := encodeStateMsg("n1", []Record{sampleRecords()[0], sampleRecords()[0]})
	huge := append([]byte{1, 2, 2, 'n', '1'}, binary.AppendUvarint(nil, 1<<40)...)
	for name, b := range map[string][]byte{
		"unsorted": unsorted, "duplicate": dup, "huge count": huge,
		"truncated": st[:len(st)-3], "record type": valid,
	} {
		if _, _, err := decodeStateMsg(b); err == nil {
			t.Errorf("state %s: decoded", name)
		}
	}
	if _, err := decodeAckMsg([]byte{1, 3, 0}); err == nil {
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
		"empty": nil, "future": {2, 1, 1, 0, 0}, "trailing": append(bytes.Clone(b), 0),
		"truncated": b[:len(b)-1], "oversized": make([]byte, 600),
	} {
		if _, err := DecodeMeta(b); err == nil {
			t.Errorf("DecodeMeta(%s) succeeded", name)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		f.Add(encodeRecordMsg(r))
	}
	f.Add([]byte{1, 1, 0x81, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecordMsg(b)
		if err != nil {
			return
		}
		if got := encodeRecordMsg(r); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %v = %x; want %x", r, got, b)
		}
		if len(b) > packetBudget {
			t.Fatalf("decoded a %d-byte record", len(b))
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	f.Add(encodeStateMsg("n1", sampleRecords()))
	f.Add(encodeStateMsg("n1", nil))
	f.Add(encodeStateMsg("n2", sampleRecords()[:1]))
	f.Fuzz(func(t *testing.T, b []byte) {
		sender, recs, err := decodeStateMsg(b)
		if err != nil {
			return
		}
		if got := encodeStateMsg(sender, recs); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding = %x; want %x", got, b)
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
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		got, err := m.Encode()
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

func TestFullStateFitsPushPull(t *testing.T) {
	const memberlistStateCap = 20 << 20 // memberlist's push/pull limit
	perRecord := len(encodeRecordMsg(maxRecord())) - 2
	if n := (maxRecords+maxFloors)*perRecord + 16 + maxOriginLen; n >= memberlistStateCap {
		t.Fatalf("largest full state = %d bytes; memberlist caps push/pull at %d", n, memberlistStateCap)
	}
}
