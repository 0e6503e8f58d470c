// Package parkpool keeps goroutines parked for the next task, so that a
// task does not pay a new goroutine's stack growth, and retires those a
// whole period did not need, so that one burst (a backend's sessions all
// ending at once, a reconnect storm) does not leave its goroutines and
// their grown stacks parked for the life of the process.
package parkpool

import (
	"sync/atomic"
	"time"
)

// TrimPeriod is how often Run trims: a burst's surplus goes between one
// and two periods after the burst.
const TrimPeriod = 5 * time.Second

// Pool hands tasks of type T to parked goroutines. The goroutines are the
// caller's: it starts one when Offer finds none parked, and each calls
// Park after its task.
type Pool[T any] struct {
	tasks  chan T
	retire chan struct{}
	max    int32
	idle   atomic.Int32
	// low is the fewest goroutines parked since the last Trim: that many
	// waited the whole time without a task.
	low atomic.Int32
}

// New returns a pool that keeps at most max goroutines parked.
func New[T any](max int) *Pool[T] {
	return &Pool[T]{tasks: make(chan T), retire: make(chan struct{}), max: int32(max)}
}

// Offer hands t to a parked goroutine and reports whether one took it;
// if none did, the caller runs t on a new goroutine.
func (p *Pool[T]) Offer(t T) bool {
	select {
	case p.tasks <- t:
		return true
	default:
		return false
	}
}

// Park waits for the calling goroutine's next task. It reports false when
// the goroutine should end instead: max are parked already, Trim retired
// it, or done closed.
func (p *Pool[T]) Park(done <-chan struct{}) (T, bool) {
	var zero T
	if p.idle.Add(1) > p.max {
		p.idle.Add(-1)
		return zero, false
	}
	select {
	case t := <-p.tasks:
		n := p.idle.Add(-1)
		for {
			l := p.low.Load()
			if n >= l || p.low.CompareAndSwap(l, n) {
				break
			}
		}
		return t, true
	case <-p.retire: // Trim took it off idle
	case <-done:
		p.idle.Add(-1)
	}
	return zero, false
}

// Idle returns how many goroutines are parked.
func (p *Pool[T]) Idle() int { return int(p.idle.Load()) }

// Trim retires the goroutines that stayed parked since the previous Trim
// (the low-water mark in between: no task needed them) and starts the
// next period's mark. A task taken while it runs may make the mark a
// little high; the cost is at most a few goroutines started again.
func (p *Pool[T]) Trim() {
	for range p.low.Load() {
		if !p.retireOne() {
			break
		}
	}
	p.low.Store(p.idle.Load())
}

// retireOne ends one parked goroutine, if one is waiting. It takes it off
// idle itself, so that the next period's mark does not count it.
func (p *Pool[T]) retireOne() bool {
	select {
	case p.retire <- struct{}{}:
		p.idle.Add(-1)
		return true
	default:
		return false
	}
}

// Run trims every TrimPeriod until done closes.
func (p *Pool[T]) Run(done <-chan struct{}) {
	t := time.NewTicker(TrimPeriod)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.Trim()
		case <-done:
			return
		}
	}
}
