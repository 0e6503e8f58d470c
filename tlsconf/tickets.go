package tlsconf

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Session-ticket keys are made by the mesh and gossiped to every node, so
// that a client resumes through any node. One entry per key: its name is
// the unix second from which it encrypts (decimal), its value a version
// byte and the 32 key bytes crypto/tls takes. Naming a key by its start
// lets every node agree on which key encrypts now from its own clock
// alone, and keeps the order whatever rotation period the minter used.

// TicketKeyLen is the size of a key crypto/tls takes.
const TicketKeyLen = 32

const ticketKeyVersion = 1

// TicketValueLen is the size of an encoded key.
const TicketValueLen = 1 + TicketKeyLen

// TicketKey is one session-ticket key.
type TicketKey struct {
	Start time.Time // from when it encrypts
	Key   [TicketKeyLen]byte
}

// TicketKeyName is the replicated key of a ticket key that starts at t.
func TicketKeyName(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// EncodeTicketKey is the replicated value of k.
func EncodeTicketKey(k [TicketKeyLen]byte) []byte {
	return append([]byte{ticketKeyVersion}, k[:]...)
}

// DecodeTicketKey decodes a replicated ticket key. It never panics; the
// errors name the entry but never hold key bytes.
func DecodeTicketKey(name string, value []byte) (TicketKey, error) {
	start, err := parseTicketName(name)
	if err != nil {
		return TicketKey{}, err
	}
	if len(value) != TicketValueLen {
		return TicketKey{}, fmt.Errorf("ticket key %q: %d bytes, want %d", name, len(value), TicketValueLen)
	}
	if value[0] != ticketKeyVersion {
		return TicketKey{}, fmt.Errorf("ticket key %q: version %d, want %d", name, value[0], ticketKeyVersion)
	}
	k := TicketKey{Start: start}
	copy(k.Key[:], value[1:])
	if k.Key == [TicketKeyLen]byte{} {
		return TicketKey{}, fmt.Errorf("ticket key %q: all zero", name)
	}
	return k, nil
}

// ValidateTicketEntry is the replicated kind's check: a well-formed name,
// and a value that decodes or is empty (a tombstone's: deleted keys are
// written without their bytes).
func ValidateTicketEntry(name string, value []byte) error {
	if len(value) == 0 {
		_, err := parseTicketName(name)
		return err
	}
	_, err := DecodeTicketKey(name, value)
	return err
}

func parseTicketName(name string) (time.Time, error) {
	// A canonical decimal only, so that one start has one name.
	if name == "" || len(name) > 12 || (name[0] == '0') {
		return time.Time{}, fmt.Errorf("ticket key name %q: want unix seconds", name)
	}
	for i := 0; i < len(name); i++ {
		if name[i] < '0' || name[i] > '9' {
			return time.Time{}, fmt.Errorf("ticket key name %q: want unix seconds", name)
		}
	}
	sec, err := strconv.ParseInt(name, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("ticket key name %q: %w", name, err)
	}
	return time.Unix(sec, 0), nil
}

// ErrNoTicketKey means no key held has started yet.
var ErrNoTicketKey = errors.New("no session-ticket key has started")

// keepOld is how many keys before the current one still decrypt: with a
// rotation of an hour, a ticket resumes for two to three hours.
const keepOld = 2

// SelectTicketKeys orders keys for tls.Config.SetSessionTicketKeys: the
// newest that has started (it encrypts), then the keepOld before it, then
// those that start within the next period (a peer whose clock runs ahead
// already encrypts with them; decrypting them costs nothing).
func SelectTicketKeys(keys []TicketKey, now time.Time, period time.Duration) ([][TicketKeyLen]byte, error) {
	ks := slices.Clone(keys)
	slices.SortFunc(ks, func(a, b TicketKey) int { return b.Start.Compare(a.Start) }) // newest first
	var out [][TicketKeyLen]byte
	var future [][TicketKeyLen]byte
	for _, k := range ks {
		switch {
		case k.Start.After(now):
			if !k.Start.After(now.Add(period)) {
				future = append(future, k.Key)
			}
		case len(out) <= keepOld:
			out = append(out, k.Key)
		}
	}
	if len(out) == 0 {
		return nil, ErrNoTicketKey
	}
	return append(out, future...), nil
}

// TicketPlan is the minter's rule: the keys that should exist now (the
// one of the current period and the next one, made a period ahead so that
// every node has it before it encrypts) and the keys to delete (all but
// the keepOld before the current one, and any too far in the future).
// held are the starts of the keys the mesh holds.
func TicketPlan(held []time.Time, now time.Time, period time.Duration) (mint, drop []time.Time) {
	cur := now.Truncate(period)
	next := cur.Add(period)
	have := make(map[int64]bool, len(held))
	for _, t := range held {
		have[t.Unix()] = true
	}
	// The current key is minted only if no key has started at all: a key
	// of an earlier period (a period changed, a minter that was away)
	// still serves until the next one starts.
	started := false
	for _, t := range held {
		if !t.After(now) {
			started = true
		}
	}
	if !started {
		mint = append(mint, cur)
	}
	if !have[next.Unix()] {
		mint = append(mint, next)
	}
	past := slices.Clone(held)
	slices.SortFunc(past, func(a, b time.Time) int { return cmp.Compare(b.Unix(), a.Unix()) })
	n := 0
	for _, t := range past {
		if t.After(now) {
			if t.After(next) {
				drop = append(drop, t)
			}
			continue
		}
		if n++; n > keepOld+1 {
			drop = append(drop, t)
		}
	}
	return mint, drop
}
