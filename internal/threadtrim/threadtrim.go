// Package threadtrim owns the process's idle OS threads: it gives back
// those a burst left behind.
//
// The Go runtime starts a thread whenever a goroutine's system call or
// cgo call holds one and other goroutines are runnable, and it never ends
// one: a node through whose HTTP path 1,000 clients pulled large
// responses on two saturated cores went from 11 threads to 24 and stayed
// there. The only way to end a thread is the documented one: a goroutine
// that exits while locked to its thread (runtime.LockOSThread) takes the
// thread with it, and the runtime hands that thread's P to an idle one.
// Run does that, one thread at a time, while the process has more than
// its target and each one trimmed makes the count drop (if it does not,
// no thread was idle, and the runtime just replaced it: stop).
package threadtrim

import (
	"context"
	"runtime"
	"time"
)

// Slack is the threads above GOMAXPROCS that are never trimmed: sysmon,
// the template thread, and a few idle ones to take a P at once.
const Slack = 8

// maxPerRound bounds the threads ended in one round.
const maxPerRound = 64

// Run trims every interval until ctx ends, down to GOMAXPROCS + Slack
// threads. Elsewhere than on Linux (no thread count to read) it returns at
// once. trimmed, if set, is told how many threads each round ended.
func Run(ctx context.Context, interval time.Duration, trimmed func(int)) {
	if _, ok := Threads(); !ok {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := Trim(runtime.GOMAXPROCS(0) + Slack); n > 0 && trimmed != nil {
			trimmed(n)
		}
	}
}

// Trim ends idle threads until at most target are left, the count stops
// dropping, or maxPerRound, and returns how many it ended.
func Trim(target int) int {
	ended := 0
	for ended < maxPerRound {
		before, ok := Threads()
		if !ok || before <= target {
			return ended
		}
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(done)
			// Exiting while locked ends this thread.
		}()
		<-done
		// The thread exits after the goroutine does; give it the moment.
		dropped := false
		for range 20 {
			if now, _ := Threads(); now < before {
				dropped = true
				break
			}
			time.Sleep(time.Millisecond)
		}
		if !dropped {
			return ended
		}
		ended++
	}
	return ended
}
