package node

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestCoalescer: a burst of changes is waited out until it has been quiet
// for the quiet period, bounded by the maximum; signals that change
// nothing don't prolong the wait; a cancelled context ends it.
func TestCoalescer(t *testing.T) {
	tests := []struct {
		name string
		// changes at these offsets from the start; a negative one signals
		// without changing the digest.
		at   []time.Duration
		want time.Duration
	}{
		{"no change: the quiet period", nil, 100 * time.Millisecond},
		{"one change restarts the quiet period", []time.Duration{50 * time.Millisecond}, 150 * time.Millisecond},
		{"a steady stream is cut at the maximum", stream(30*time.Millisecond, 40), 500 * time.Millisecond},
		{"signals without a change are ignored", []time.Duration{-50 * time.Millisecond, -90 * time.Millisecond}, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var digest atomic.Uint64
				changes := make(chan struct{}, 1)
				c := coalescer{quiet: 100 * time.Millisecond, max: 500 * time.Millisecond, digest: digest.Load}
				start := time.Now()
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					for _, at := range tt.at {
						change := at >= 0
						select {
						case <-stop:
							return
						case <-time.After(time.Until(start.Add(max(at, -at)))):
						}
						if change {
							digest.Add(1)
						}
						select { // as gossip signals: coalesced, never blocking
						case changes <- struct{}{}:
						default:
						}
					}
				}()
				if !c.wait(context.Background(), changes) {
					t.Fatal("wait returned false without a cancelled context")
				}
				if got := time.Since(start); got != tt.want {
					t.Fatalf("waited %v; want %v", got, tt.want)
				}
			})
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
			defer cancel()
			c := coalescer{quiet: time.Second, max: time.Minute, digest: func() uint64 { return 0 }}
			if c.wait(ctx, make(chan struct{})) {
				t.Fatal("wait returned true after its context ended")
			}
		})
	})
}

func stream(every time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i+1) * every
	}
	return out
}
