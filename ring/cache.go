package ring

import "sync"

// Build caches. A node rebuilds its ring on every backend change, and most
// of what a build computes depends on a small part of its input: a
// backend's vnode hashes on its ID alone, a v2 group's library ring on
// that group alone, the partitions' points on the seed and the count. The
// caches below keep those results across builds, in the process, each
// keyed by every input its value depends on, so a hit returns exactly
// what computing it again would: the table never depends on what was
// built before. Values are never modified once stored.

// genCache is a map bounded by the bytes it holds, in two generations:
// entries go to the current one, and when it is full it becomes the old
// one and the old one is dropped. A hit in the old generation moves the
// entry back to the current one, so what every build uses stays, and the
// cache holds at most twice its limit.
type genCache[K comparable, V any] struct {
	mu       sync.Mutex
	limit    int
	cur, old map[K]sized[V]
	curBytes int
	// Computations under way: a build that needs one waits for it rather
	// than repeating it (nodes in one process rebuild the same ring at
	// the same time).
	flights map[K]*flight[V]
}

type flight[V any] struct {
	done chan struct{}
	v    V
	err  error
}

type sized[V any] struct {
	v     V
	bytes int
}

func newGenCache[K comparable, V any](limit int) *genCache[K, V] {
	return &genCache[K, V]{limit: limit, cur: map[K]sized[V]{}, flights: map[K]*flight[V]{}}
}

// getOrCompute returns the value of k, from the cache, from a computation
// of it under way, or from compute, which returns the value and its size
// in bytes (see put). An error is returned to the builds that waited for
// it and not kept.
func (c *genCache[K, V]) getOrCompute(k K, compute func() (V, int, error)) (V, error) {
	if v, ok := c.get(k); ok {
		return v, nil
	}
	c.mu.Lock()
	if f, ok := c.flights[k]; ok {
		c.mu.Unlock()
		<-f.done
		return f.v, f.err
	}
	if e, ok := c.cur[k]; ok { // stored since get
		c.mu.Unlock()
		return e.v, nil
	}
	f := &flight[V]{done: make(chan struct{})}
	c.flights[k] = f
	c.mu.Unlock()
	var bytes int
	f.v, bytes, f.err = compute()
	c.mu.Lock()
	delete(c.flights, k)
	c.mu.Unlock()
	if f.err == nil {
		c.put(k, f.v, bytes)
	}
	close(f.done)
	return f.v, f.err
}

func (c *genCache[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cur[k]; ok {
		return e.v, true
	}
	if e, ok := c.old[k]; ok {
		delete(c.old, k)
		c.putLocked(k, e)
		return e.v, true
	}
	var zero V
	return zero, false
}

// put stores v under k; bytes is what the entry holds, key included. A
// value larger than the limit is not kept.
func (c *genCache[K, V]) put(k K, v V, bytes int) {
	if bytes > c.limit {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.cur[k]; ok {
		return
	}
	c.putLocked(k, sized[V]{v, bytes})
}

func (c *genCache[K, V]) putLocked(k K, e sized[V]) {
	if c.curBytes+e.bytes > c.limit {
		c.old, c.cur, c.curBytes = c.cur, map[K]sized[V]{}, 0
	}
	c.cur[k] = e
	c.curBytes += e.bytes
}

// reset empties the cache (tests and benchmarks of cold builds).
func (c *genCache[K, V]) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur, c.old, c.curBytes = map[K]sized[V]{}, nil, 0
}

// resetBuildCaches empties every build cache, so that the next build
// computes everything again.
func resetBuildCaches() {
	circles.reset()
	pointCache.reset()
	groupCache.reset()
}
