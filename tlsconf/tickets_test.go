package tlsconf

import (
	"slices"
	"testing"
	"time"
)

func TestTicketKeyCodec(t *testing.T) {
	var k [TicketKeyLen]byte
	k[0], k[31] = 1, 2
	at := time.Unix(1_800_000_000, 0)
	got, err := DecodeTicketKey(TicketKeyName(at), EncodeTicketKey(k))
	if err != nil || got.Key != k || !got.Start.Equal(at) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	for _, tc := range []struct {
		label, name string
		value       []byte
	}{
		{"short", "1800000000", EncodeTicketKey(k)[:10]},
		{"version", "1800000000", append([]byte{9}, k[:]...)},
		{"zero key", "1800000000", EncodeTicketKey([TicketKeyLen]byte{})},
		{"leading zero", "01800000000", EncodeTicketKey(k)},
		{"not a number", "18e9", EncodeTicketKey(k)},
		{"negative", "-1", EncodeTicketKey(k)},
		{"empty name", "", EncodeTicketKey(k)},
	} {
		if _, err := DecodeTicketKey(tc.name, tc.value); err == nil {
			t.Errorf("%s: decoded", tc.label)
		}
	}
	if err := ValidateTicketEntry("1800000000", nil); err != nil {
		t.Errorf("a tombstone's empty value refused: %v", err)
	}
}

func FuzzTicketKey(f *testing.F) {
	var k [TicketKeyLen]byte
	k[3] = 7
	f.Add("1800000000", EncodeTicketKey(k))
	f.Add("0", []byte{1})
	f.Add("99999999999999999999", []byte{})
	f.Fuzz(func(t *testing.T, name string, value []byte) {
		got, err := DecodeTicketKey(name, value)
		if err != nil {
			return
		}
		// What decodes encodes back to the same entry.
		if TicketKeyName(got.Start) != name || string(EncodeTicketKey(got.Key)) != string(value) {
			t.Fatalf("%q %x: not canonical", name, value)
		}
		if ValidateTicketEntry(name, value) != nil {
			t.Fatal("decodes but does not validate")
		}
	})
}

func TestTicketPlanAndSelect(t *testing.T) {
	const p = time.Hour
	base := time.Unix(1_800_000_000, 0).Truncate(p)
	now := base.Add(20 * time.Minute)
	at := func(i int) time.Time { return base.Add(time.Duration(i) * p) }

	// An empty mesh mints the current key and the next.
	mint, drop := TicketPlan(nil, now, p)
	if !slices.EqualFunc(mint, []time.Time{at(0), at(1)}, time.Time.Equal) || len(drop) != 0 {
		t.Fatalf("empty: mint %v drop %v", mint, drop)
	}
	// Steady state: nothing to do.
	if mint, drop := TicketPlan([]time.Time{at(-2), at(-1), at(0), at(1)}, now, p); len(mint)+len(drop) != 0 {
		t.Fatalf("steady: mint %v drop %v", mint, drop)
	}
	// A period later: the next one is made, the oldest beyond two dropped.
	later := now.Add(p)
	mint, drop = TicketPlan([]time.Time{at(-2), at(-1), at(0), at(1)}, later, p)
	if !slices.EqualFunc(mint, []time.Time{at(2)}, time.Time.Equal) || !slices.EqualFunc(drop, []time.Time{at(-2)}, time.Time.Equal) {
		t.Fatalf("rotation: mint %v drop %v", mint, drop)
	}
	// A minter that was away: the old key serves on until the next starts.
	mint, _ = TicketPlan([]time.Time{at(-5)}, now, p)
	if !slices.EqualFunc(mint, []time.Time{at(1)}, time.Time.Equal) {
		t.Fatalf("away: mint %v", mint)
	}
	// Far-future garbage is dropped.
	if _, drop := TicketPlan([]time.Time{at(0), at(1), at(9)}, now, p); !slices.EqualFunc(drop, []time.Time{at(9)}, time.Time.Equal) {
		t.Fatalf("future: drop %v", drop)
	}

	key := func(i int) TicketKey { var k TicketKey; k.Start = at(i); k.Key[0] = byte(i + 10); return k }
	sel, err := SelectTicketKeys([]TicketKey{key(1), key(-3), key(0), key(-1), key(-2)}, now, p)
	if err != nil {
		t.Fatal(err)
	}
	// Current first, the two before it, then the next one (decrypt only).
	want := [][TicketKeyLen]byte{key(0).Key, key(-1).Key, key(-2).Key, key(1).Key}
	if !slices.Equal(sel, want) {
		t.Fatalf("select: %v; want %v", sel, want)
	}
	if _, err := SelectTicketKeys([]TicketKey{key(1)}, now, p); err != ErrNoTicketKey {
		t.Fatalf("only a future key: %v; want ErrNoTicketKey", err)
	}
}
