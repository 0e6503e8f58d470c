// Package testlog is a log writer for tests of code that runs memberlist.
// memberlist's probe and gossip loops may still log for a moment after
// Shutdown returns, and a t.Log after the test has ended panics ("Log in
// goroutine after Test... has completed"), failing a test that passed. The
// writer here forwards to t.Log until the test's cleanup, then drops.
package testlog

import (
	"strings"
	"sync"
	"testing"
)

type writer struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

// Writer returns an io.Writer into tb.Log that goes quiet when tb ends.
func Writer(tb testing.TB) *writer {
	w := &writer{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
