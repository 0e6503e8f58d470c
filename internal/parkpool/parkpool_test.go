package parkpool

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// crew runs tasks as the pool's users do: a new goroutine when no parked
// one takes the task, Park after each.
type crew struct {
	p      *Pool[func()]
	done   chan struct{}
	wg     sync.WaitGroup
	exited atomic.Int32
}

func newCrew(max int) *crew {
	c := &crew{p: New[func()](max), done: make(chan struct{})}
	c.wg.Go(func() { c.p.Run(c.done) })
	return c
}

func (c *crew) run(task func()) {
	if c.p.Offer(task) {
		return
	}
	c.wg.Go(func() {
		defer c.exited.Add(1)
		for ok := true; ok; task, ok = c.p.Park(c.done) {
			task()
		}
	})
}

// burst runs n tasks at once and returns when all of them have finished
// and their goroutines are parked or gone.
func (c *crew) burst(n int) {
	release := make(chan struct{})
	var started sync.WaitGroup
	started.Add(n)
	for range n {
		c.run(func() { started.Done(); <-release })
	}
	started.Wait()
	close(release)
	synctest.Wait()
}

func (c *crew) stop() {
	close(c.done)
	c.wg.Wait()
}

// The soak's failure: a backend kill ended 69 sessions at once, and the 69
// goroutines that ended them stayed parked to the end of the run.
func TestBurstIsRetired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCrew(64)
		defer c.stop()
		c.burst(40)
		if got := c.p.Idle(); got != 40 {
			t.Fatalf("after a burst of 40: %d parked; want 40", got)
		}
		time.Sleep(2 * TrimPeriod)
		synctest.Wait()
		if got, gone := c.p.Idle(), c.exited.Load(); got != 0 || gone != 40 {
			t.Errorf("two trim periods after the burst: %d parked, %d ended; want 0 and 40", got, gone)
		}
	})
}

// Goroutines that every period needs stay parked: the pool exists so that
// steady load does not start a goroutine per task.
func TestSteadyUseIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCrew(64)
		defer c.stop()
		c.burst(8)
		for range 10 {
			time.Sleep(TrimPeriod / 2)
			c.burst(8)
		}
		if got, gone := c.p.Idle(), c.exited.Load(); got != 8 || gone != 0 {
			t.Errorf("after 5 periods of bursts of 8: %d parked, %d ended; want 8 and 0", got, gone)
		}
	})
}

// Only the surplus goes: after a burst of 30, a steady 10 keep theirs.
func TestOnlySurplusIsRetired(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCrew(64)
		defer c.stop()
		c.burst(30)
		for range 8 {
			time.Sleep(TrimPeriod / 2)
			c.burst(10)
		}
		if got, gone := c.p.Idle(), c.exited.Load(); got != 10 || gone != 20 {
			t.Errorf("a burst of 30, then 4 periods of bursts of 10: %d parked, %d ended; want 10 and 20", got, gone)
		}
	})
}

func TestParkBeyondMaxEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCrew(5)
		defer c.stop()
		c.burst(12)
		if got, gone := c.p.Idle(), c.exited.Load(); got != 5 || gone != 7 {
			t.Errorf("a burst of 12 with max 5: %d parked, %d ended; want 5 and 7", got, gone)
		}
	})
}

func TestDoneEndsParked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCrew(64)
		c.burst(6)
		c.stop()
		if got, gone := c.p.Idle(), c.exited.Load(); got != 0 || gone != 6 {
			t.Errorf("after done: %d parked, %d ended; want 0 and 6", got, gone)
		}
	})
}
