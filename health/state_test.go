package health

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"
	"time"
)

func sampleObs() []Observation {
	return []Observation{
		{Node: "n1", ID: "a", Up: true},
		{Node: "n2", ID: "a", Up: false, Detail: "tcp: connection refused"},
		{Node: "n1", ID: "b", Up: false, Detail: strings.Repeat("d", MaxDetailLen)},
	}
}

func sampleVerdicts() []Verdict {
	return []Verdict{
		{ID: "a", Reason: VerdictDown, Votes: 2, Voters: 3, Strikes: 1, Changed: 5},
		{ID: "b", Reason: VerdictHeld, Votes: 0, Voters: 3, Strikes: 4, Changed: 5, UpSince: 7},
		{ID: "c", Reason: VerdictOverBudget, Votes: math.MaxUint16, Voters: math.MaxUint16, Strikes: math.MaxUint16,
			Changed: math.MaxUint64, UpSince: math.MaxUint64},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	since := time.UnixMilli(1_800_000_000_000)
	for _, o := range sampleObs() {
		o.Since = since
		got, err := DecodeObservation(ObservationKey(o.ID, o.Node), o.Value(), since)
		if err != nil || got != o {
			t.Errorf("observation round trip: got %+v, %v; want %+v", got, err, o)
		}
	}
	for _, v := range sampleVerdicts() {
		got, err := DecodeVerdict(v.ID, v.Value())
		if err != nil || got != v {
			t.Errorf("verdict round trip: got %+v, %v; want %+v", got, err, v)
		}
	}
	// A long detail is cut on a rune boundary, to the limit.
	long := Observation{ID: "a", Node: "n", Detail: strings.Repeat("é", MaxDetailLen)}
	v := long.Value()
	if len(v)-1 > MaxDetailLen || !bytes.HasPrefix(long.Value()[1:], []byte("éé")) || len(v)%2 != 1 {
		t.Errorf("long detail encoded as %d bytes: %q", len(v), v)
	}
	if _, err := DecodeObservation("a\x00n", v, since); err != nil {
		t.Errorf("a cut detail does not decode: %v", err)
	}
}

func TestCodecRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		key   string
		value []byte
	}{
		"no node":         {"a", []byte{1}},
		"empty backend":   {"\x00n", []byte{1}},
		"two nuls":        {"a\x00n\x00m", []byte{1}},
		"no up byte":      {"a\x00n", nil},
		"up byte 2":       {"a\x00n", []byte{2}},
		"detail too long": {"a\x00n", append([]byte{0}, strings.Repeat("d", MaxDetailLen+1)...)},
	} {
		if _, err := DecodeObservation(tc.key, tc.value, time.Time{}); err == nil {
			t.Errorf("observation %s: decoded", name)
		}
	}
	v0 := sampleVerdicts()[0]
	badVotes := v0
	badVotes.Votes = badVotes.Voters + 1
	for name, b := range map[string][]byte{
		"empty":              nil,
		"zero reason":        append([]byte{0}, v0.Value()[1:]...),
		"unknown reason":     append([]byte{9}, v0.Value()[1:]...),
		"votes above voters": badVotes.Value(),
		"truncated":          v0.Value()[:3],
		"trailing":           append(v0.Value(), 0),
		"non-minimal":        {byte(VerdictDown), 0x80, 0x00, 0, 0, 0, 0},
		"strikes 2^16": func() []byte {
			b := []byte{byte(VerdictDown), 0, 0}
			b = binary.AppendUvarint(b, 1<<16)
			return append(b, 0, 0)
		}(),
	} {
		if _, err := DecodeVerdict("a", b); err == nil {
			t.Errorf("verdict %s: decoded", name)
		}
	}
}

func FuzzDecodeObservation(f *testing.F) {
	for _, o := range sampleObs() {
		f.Add(ObservationKey(o.ID, o.Node), o.Value())
	}
	f.Fuzz(func(t *testing.T, key string, b []byte) {
		o, err := DecodeObservation(key, b, time.Time{})
		if err != nil {
			return
		}
		if got := o.Value(); !bytes.Equal(got, b) || ObservationKey(o.ID, o.Node) != key {
			t.Fatalf("re-encoding %+v = %q %x; want %q %x", o, ObservationKey(o.ID, o.Node), got, key, b)
		}
	})
}

func FuzzDecodeVerdict(f *testing.F) {
	for _, v := range sampleVerdicts() {
		f.Add(v.Value())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeVerdict("a", b)
		if err != nil {
			return
		}
		if got := v.Value(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %+v = %x; want %x", v, got, b)
		}
	})
}
