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
		if got, err := decodeStateMsg(encodeStateMsg(fullState{sender: "n", records: c.state()})); err != nil || !reflect.DeepEqual(got.records, c.state()) {
			t.Fatalf("state round trip: got %v, %v; want %v", got, err, c.state())
		}
	}
	recs := sampleRecords()
	st := fullState{sender: "n1", records: recs, obs: sampleObs(), verdicts: sampleVerdicts()}
	got, err := decodeStateMsg(encodeStateMsg(st))
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("state round trip: %+v %v", got, err)
	}
	if got, err := decodeStateMsg(encodeStateMsg(fullState{sender: "n1"})); err != nil || len(got.records)+len(got.obs)+len(got.verdicts) != 0 {
		t.Errorf("empty state: %v %v", got, err)
	}
	for _, o := range sampleObs() {
		if got, err := decodeObsMsg(encodeObsMsg(o)); err != nil || got != o {
			t.Errorf("observation round trip: got %v, %v; want %v", got, err, o)
		}
	}
	for _, v := range sampleVerdicts() {
		if got, err := decodeVerdictMsg(encodeVerdictMsg(v)); err != nil || got != v {
			t.Errorf("verdict round trip: got %v, %v; want %v", got, err, v)
		}
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
		{"future version", append([]byte{wireVersion + 1}, valid[1:]...), reasonVersion},
		{"unknown type", append([]byte{wireVersion, 9}, valid[2:]...), reasonType},
		{"truncated", valid[:len(valid)-1], reasonTruncated},
		{"trailing", append(bytes.Clone(valid), 0), reasonTrailing},
		{"unknown state", withState(7), reasonMalformed},
		{"zero state", withState(0), reasonMalformed},
		{"non-minimal uvarint", nonMinimal, reasonMalformed},
		{"id too long", append([]byte{wireVersion, 1}, binary.AppendUvarint(nil, 256)...), reasonOversized},
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

	state := func(recs []Record, obs []Observation, vs []Verdict) []byte {
		return encodeStateMsg(fullState{sender: "n1", records: recs, obs: obs, verdicts: vs})
	}
	st := state(sampleRecords()[:2], sampleObs(), sampleVerdicts())
	r0, r1 := sampleRecords()[0], sampleRecords()[1]
	o0, o1 := sampleObs()[0], sampleObs()[1]
	v0, v1 := sampleVerdicts()[0], sampleVerdicts()[1]
	huge := append([]byte{wireVersion, 2, 2, 'n', '1'}, binary.AppendUvarint(nil, 1<<40)...)
	badVotes := v0
	badVotes.Votes = badVotes.Voters + 1
	for name, b := range map[string][]byte{
		"unsorted": state([]Record{r1, r0}, nil, nil), "duplicate": state([]Record{r0, r0}, nil, nil), "huge count": huge,
		"truncated": st[:len(st)-3], "record type": valid,
		"unsorted observations": state(nil, []Observation{o1, o0}, nil),
		"duplicate observation": state(nil, []Observation{o0, o0}, nil),
		"unsorted verdicts":     state(nil, nil, []Verdict{v1, v0}),
		"votes above voters":    state(nil, nil, []Verdict{badVotes}),
		"no health sections":    encodeStateV1(sampleRecords()),
	} {
		if _, err := decodeStateMsg(b); err == nil {
			t.Errorf("state %s: decoded", name)
		}
	}
	badUp := encodeObsMsg(o0)
	badUp[2+1+len(o0.Node)+1+len(o0.ID)] = 2
	zeroReason := encodeVerdictMsg(v0)
	zeroReason[2+1+len(v0.ID)] = 0
	big := v0
	for name, b := range map[string][]byte{
		"up byte 2":   badUp,
		"zero reason": zeroReason,
		"strikes 2^16": func() []byte {
			b := append([]byte{wireVersion, msgVerdict}, appendString(nil, big.ID)...)
			b = append(b, byte(VerdictDown), 0, 0)
			b = binary.AppendUvarint(b, 1<<16)
			return b
		}(),
	} {
		_, err1 := decodeObsMsg(b)
		_, err2 := decodeVerdictMsg(b)
		if err1 == nil || err2 == nil {
			t.Errorf("%s: decoded (%v, %v)", name, err1, err2)
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
	f.Add([]byte{wireVersion, 1, 0x81, 0x00})
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
	f.Add(encodeStateMsg(fullState{sender: "n1", records: sampleRecords(), obs: sampleObs(), verdicts: sampleVerdicts()}))
	f.Add(encodeStateMsg(fullState{sender: "n1"}))
	f.Add(encodeStateMsg(fullState{sender: "n2", records: sampleRecords()[:1]}))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeStateMsg(b)
		if err != nil {
			return
		}
		if got := encodeStateMsg(st); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding = %x; want %x", got, b)
		}
	})
}

func FuzzDecodeObservation(f *testing.F) {
	for _, o := range sampleObs() {
		f.Add(encodeObsMsg(o))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeObsMsg(b)
		if err != nil {
			return
		}
		if got := encodeObsMsg(o); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %+v = %x; want %x", o, got, b)
		}
		if len(b) > packetBudget {
			t.Fatalf("decoded a %d-byte observation", len(b))
		}
	})
}

func FuzzDecodeVerdict(f *testing.F) {
	for _, v := range sampleVerdicts() {
		f.Add(encodeVerdictMsg(v))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeVerdictMsg(b)
		if err != nil {
			return
		}
		if got := encodeVerdictMsg(v); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %+v = %x; want %x", v, got, b)
		}
		if len(b) > packetBudget {
			t.Fatalf("decoded a %d-byte verdict", len(b))
		}
	})
}

func sampleObs() []Observation {
	return []Observation{
		{Node: "n1", ID: "a", Up: true, Version: 1 << 16},
		{Node: "n2", ID: "a", Up: false, Version: 77 << 16, Detail: "tcp connect: connection refused"},
		{Node: "n1", ID: "b", Up: false, Version: math.MaxUint64, Detail: strings.Repeat("d", maxDetailLen)},
	}
}

func sampleVerdicts() []Verdict {
	return []Verdict{
		{ID: "a", Reason: VerdictDown, Votes: 2, Voters: 3, Strikes: 1, Changed: 5, Version: 9, Origin: "n1"},
		{ID: "b", Reason: VerdictHeld, Votes: 0, Voters: 3, Strikes: 4, Changed: 5, UpSince: 7, Version: math.MaxUint64, Origin: "n2"},
		{ID: strings.Repeat("c", maxIDLen), Reason: VerdictOverBudget, Votes: math.MaxUint16, Voters: math.MaxUint16, Strikes: math.MaxUint16,
			Changed: math.MaxUint64, UpSince: math.MaxUint64, Version: math.MaxUint64, Origin: strings.Repeat("o", maxOriginLen)},
	}
}

// encodeStateV1 is a full state as version 1 sent it: records only.
func encodeStateV1(recs []Record) []byte {
	b := []byte{wireVersion, msgState}
	b = appendString(b, "n1")
	b = binary.AppendUvarint(b, uint64(len(recs)))
	for _, r := range recs {
		b = appendRecord(b, r)
	}
	return b
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
	if n := (maxRecords+maxFloors)*perRecord + 16 + maxOriginLen + maxObsBytes + maxVerdictBytes; n >= memberlistStateCap {
		t.Fatalf("largest full state = %d bytes; memberlist caps push/pull at %d", n, memberlistStateCap)
	}
}
