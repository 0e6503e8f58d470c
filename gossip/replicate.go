package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// The replicator: every kind of state goes through these few functions, so
// merging, stamping, relaying, repairing and notifying are written once.
//
//	local write:  Update → writeLocked (stamp, merge, queue broadcast) → signal
//	peer delta:   notifyMsg → mergeRemoteLocked (check, merge, relay) → signal
//	full state:   mergeRemoteState → mergeRemoteLocked for each entry → signal
//
// A consumer never sees a message: it reads Entries or Get whenever a
// channel from Subscribe fires, and compares Digest to tell its kinds'
// changes from the others'.

// Subscribe returns a new channel that receives a value, coalesced,
// whenever any replicated entry, the membership or a member's meta changed.
// Each consumer takes its own channel, so none steals another's signals. It
// is never closed.
func (c *Cluster) Subscribe() <-chan struct{} {
	ch := make(chan struct{}, 1)
	c.subsMu.Lock()
	c.subs = append(c.subs, ch)
	c.subsMu.Unlock()
	return ch
}

func (c *Cluster) signal() {
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	for _, ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Digest is an order-independent hash of the entries of kind k, tombstones
// included: equal digests mean equal entries. It costs one atomic load.
func (c *Cluster) Digest(k Kind) uint64 {
	if d, ok := c.digests.Load(k); ok {
		return d.(*atomic.Uint64).Load()
	}
	return 0
}

// Get returns a copy of the entry held for (k, key), tombstones included.
func (c *Cluster) Get(k Kind, key string) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.store.Get(k, key)
	e.Value = bytes.Clone(e.Value)
	return e, ok
}

// Entries returns a copy of every entry of kind k held, tombstones
// included, sorted by key.
func (c *Cluster) Entries(k Kind) []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	es := c.store.Entries(k)
	for i := range es {
		es[i].Value = bytes.Clone(es[i].Value)
	}
	return es
}

// Put writes value under (k, key) with a new version and broadcasts it. For
// an owned kind, writing the value this node last wrote is a no-op.
func (c *Cluster) Put(k Kind, key string, value []byte) (Entry, error) {
	return c.Update(k, key, func(cur Entry, ok bool) (Entry, bool, error) {
		return Entry{Value: value}, true, nil
	})
}

// Delete writes a tombstone for (k, key), keeping its last value. Deleting
// a key that is not held, or already deleted, is a no-op.
func (c *Cluster) Delete(k Kind, key string) (Entry, error) {
	return c.Update(k, key, func(cur Entry, ok bool) (Entry, bool, error) {
		if !ok || cur.Deleted {
			return cur, false, nil
		}
		return Entry{Deleted: true, Value: cur.Value}, true, nil
	})
}

// Update is a read-modify-write of (k, key) under the replica's lock: fn
// gets the entry held (ok false if none; its Value must not be changed)
// and returns what to write (only its Value and Deleted count), whether to
// write at all, or an error to return as is. fn runs under the lock: it
// must be quick and must not call the Cluster. Update stamps the write with a new version and this node
// as its origin, merges it and broadcasts it. It returns the entry held
// afterwards.
func (c *Cluster) Update(k Kind, key string, fn func(cur Entry, ok bool) (Entry, bool, error)) (Entry, error) {
	if c.closed() {
		return Entry{}, ErrClosed
	}
	spec, ok := c.specs[k]
	if !ok {
		return Entry{}, fmt.Errorf("write %q: unknown kind %d", key, k)
	}
	if spec.Secret && c.cfg.SecretKey == nil {
		return Entry{}, fmt.Errorf("write %s %q: %s entries travel only over encrypted gossip: set a gossip key", spec.Name, key, spec.Name)
	}
	c.mu.Lock()
	if spec.Backend != nil {
		if id := spec.Backend(key); c.store.removed(id) {
			c.mu.Unlock()
			return Entry{}, fmt.Errorf("write %s of %s: %w", spec.Name, id, ErrUnknownBackend)
		}
	}
	cur, had := c.store.Get(k, key)
	next, write, err := fn(cur, had)
	if err != nil || !write {
		c.mu.Unlock()
		return cur, err
	}
	next.Kind, next.Key, next.Origin = k, key, c.cfg.Name
	if spec.Owned {
		if mine, ok := c.mine[storeKey{k, key}]; ok && mine.Deleted == next.Deleted && string(mine.Value) == string(next.Value) {
			c.mu.Unlock()
			return cur, nil
		}
	}
	e, err := c.writeLocked(next, time.Now())
	c.mu.Unlock()
	if err != nil {
		return Entry{}, err
	}
	c.signal()
	return e, nil
}

// writeLocked stamps e with a new version, merges it and queues its
// broadcast. The clock is above every version accepted, so the merge can
// only lose if the clock is exhausted, which maxClockSkew makes impossible;
// it is still checked rather than assumed.
func (c *Cluster) writeLocked(e Entry, now time.Time) (Entry, error) {
	c.clock = max(c.clock+1, uint64(now.UnixMilli())<<16)
	e.Version = c.clock
	changed, err := c.store.Merge(e, now)
	if err != nil {
		return Entry{}, fmt.Errorf("write %q: %w", e.Key, err)
	}
	if !changed {
		return Entry{}, fmt.Errorf("write %q: version %d is not newer than the one held", e.Key, e.Version)
	}
	if c.specs[e.Kind].Owned {
		c.mine[storeKey{e.Kind, e.Key}] = e
	}
	c.broadcastLocked(e)
	c.noteLocked()
	return e, nil
}

// maxClockSkew bounds how far ahead of our clock a peer's entry version
// may be. Without it one entry stamped near 2^64 would pin the clock there:
// every later write would lose to it, and its tombstone would never expire.
const maxClockSkew = time.Hour

// mergeRemoteLocked merges an entry from a peer and reports whether it was
// new here; with relay, what is new is passed on (memberlist does not relay
// user messages). An entry of ours from an earlier life that beats what we
// hold now is refuted with a newer write of our current value, as
// memberlist refutes a suspicion.
func (c *Cluster) mergeRemoteLocked(e Entry, now time.Time, relay bool) (bool, error) {
	if e.Time().After(now.Add(maxClockSkew)) {
		return false, reject(reasonFuture, "entry %q is stamped %v, more than %v ahead", e.Key, e.Time().UTC(), maxClockSkew)
	}
	spec, known := c.specs[e.Kind]
	if known && spec.Secret && c.cfg.SecretKey == nil {
		return false, reject(reasonSecret, "%s entry %q refused: this node has no gossip key", spec.Name, e.Key)
	}
	changed, err := c.store.Merge(e, now)
	if err != nil || !changed {
		return false, err
	}
	c.clock = max(c.clock, e.Version)
	if spec.Owned && e.Origin == c.cfg.Name {
		if mine, ok := c.mine[storeKey{e.Kind, e.Key}]; ok && (mine.Deleted != e.Deleted || string(mine.Value) != string(e.Value)) {
			mine.Version = 0
			if _, err := c.writeLocked(mine, now); err != nil {
				return true, err
			}
			return true, nil
		}
	}
	if relay {
		c.broadcastLocked(e)
	}
	return true, nil
}

// broadcastLocked queues e's broadcast, named by its kind and key so that a
// newer write replaces a queued older one. Called under mu so the queue's
// order follows the merge order.
func (c *Cluster) broadcastLocked(e Entry) {
	c.queue.QueueBroadcast(&entryBroadcast{name: string(rune(e.Kind)) + "\x00" + e.Key, msg: encodeEntryMsg(e)})
	if c.queue.NumQueued() > maxQueued {
		c.queue.Prune(maxQueued)
	}
}

// noteLocked publishes the digests and the catalog gauges. Every change to
// the store calls it.
func (c *Cluster) noteLocked() {
	d := c.store.digest
	c.digest.Store(d)
	c.history.add(d)
	for k := range c.specs {
		if p, ok := c.digests.Load(k); ok {
			p.(*atomic.Uint64).Store(c.store.Digest(k))
		}
	}
	ks := c.store.kind(KindBackend)
	counts := map[State]int{}
	for _, e := range ks.entries {
		counts[recordOf(e).State]++
	}
	for _, s := range []State{StateActive, StateDraining, StateRemoved} {
		c.m.records.WithLabelValues(s.String()).Set(float64(counts[s]))
	}
}

// mergeForTest merges e without broadcasting it, as if its broadcast had
// reached no one else.
func (c *Cluster) mergeForTest(e Entry) bool {
	c.mu.Lock()
	changed, _ := c.mergeRemoteLocked(e, time.Now(), false)
	c.noteLocked()
	c.mu.Unlock()
	if changed {
		c.signal()
	}
	return changed
}

// kindName labels a kind in metrics: its registered name, or "unknown".
func (c *Cluster) kindName(k Kind) string {
	if s, ok := c.specs[k]; ok {
		return s.Name
	}
	return "unknown"
}

// errKindUnknown tells the merge of a full state to skip, not refuse, an
// entry of a kind a newer release added.
func isUnknownKind(err error) bool {
	de, ok := errors.AsType[*decodeError](err)
	return ok && de.reason == reasonKind
}
