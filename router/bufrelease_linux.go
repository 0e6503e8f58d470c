package router

import (
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Giving the buffers of ended stalls back to the kernel.
//
// A parked direction keeps its read buffer (a pollBuf, 16 KiB) for as
// long as its peer takes no byte: 9,344 sessions stalled both ways held
// 340 MB. When they end, the buffers go back to pollBufPool, and the Go
// runtime returns their memory only after two collections (a sync.Pool
// keeps its contents through one) and at its scavenger's pace; a node
// that has gone quiet allocates little, so it may not collect for the
// runtime's two minutes between forced collections. The attack campaign
// saw RSS stay at 373 MB after the stalled sessions had closed. HAProxy
// trims its pools back to the system when memory is freed in bulk
// (pool_gc); releaseBuffers does that for the relay: when the buffers out
// of the pool have fallen by releaseBufs since their peak, it collects
// twice and returns the free memory at once.

// releaseBufs is the drop in buffers out (about 33 MB) that triggers a
// release: a full collection costs a few milliseconds of CPU at a node's
// heap, nothing beside 33 MB held for minutes.
const releaseBufs = 2048

// releaseEvery rate-limits the check: every loop's sweep calls it.
const releaseEvery = 5 * time.Second

var (
	pollBufsOut  atomic.Int64 // taken from pollBufPool and not put back
	pollBufsPeak atomic.Int64 // the most out since the last release
	releaseNext  atomic.Int64 // unix nanoseconds of the next check
)

// releaseBuffers returns the relay's freed buffers to the kernel if many
// have come back since the last release (see above). Safe to call from
// any goroutine; one caller per releaseEvery does the check.
func releaseBuffers(log *zerolog.Logger, now time.Time) {
	next := releaseNext.Load()
	if now.UnixNano() < next || !releaseNext.CompareAndSwap(next, now.Add(releaseEvery).UnixNano()) {
		return
	}
	out, peak := pollBufsOut.Load(), pollBufsPeak.Load()
	if peak-out < releaseBufs {
		return
	}
	pollBufsPeak.Store(out)
	start := time.Now()
	debug.FreeOSMemory() // the pool's buffers move to its victim cache
	debug.FreeOSMemory() // and are freed, then returned
	log.Debug().Int64("buffers", peak-out).Int64("mb", (peak-out)*int64(len(pollBuf{}.b))>>20).
		Dur("took", time.Since(start)).Msg("relay buffers released")
}
