package router

import (
	"runtime"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The buffers of ended stalls go back to the kernel at the next check,
// not after the runtime's own pace (see releaseBuffers).
func TestReleaseBuffersReturnsEndedStalls(t *testing.T) {
	log := zerolog.Nop()
	now := time.Now()
	releaseNext.Store(0)
	pollBufsPeak.Store(pollBufsOut.Load())

	const n = 3 * releaseBufs // ~100 MB
	bufs := make([]*pollBuf, n)
	for i := range bufs {
		bufs[i] = getPollBuf()
		bufs[i].b[0] = 1 // touch the memory, as a read does
	}
	var held runtime.MemStats
	runtime.ReadMemStats(&held)
	for _, b := range bufs {
		putPollBuf(b)
	}
	bufs = nil

	// Too soon after a check: nothing happens.
	releaseNext.Store(now.Add(time.Second).UnixNano())
	releaseBuffers(&log, now)
	if got, want := pollBufsPeak.Load()-pollBufsOut.Load(), int64(n); got < want {
		t.Fatalf("peak - out = %d before the check, want >= %d", got, want)
	}

	releaseNext.Store(0)
	releaseBuffers(&log, now)
	if pollBufsPeak.Load() != pollBufsOut.Load() {
		t.Fatalf("peak %d, out %d after a release: want the peak reset", pollBufsPeak.Load(), pollBufsOut.Load())
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	bufBytes := uint64(n * len(pollBuf{}.b))
	if held.HeapInuse < bufBytes || after.HeapInuse > held.HeapInuse-bufBytes*3/4 {
		t.Fatalf("heap in use %d MB with the buffers out, %d MB after the release: want the %d MB of buffers freed",
			held.HeapInuse>>20, after.HeapInuse>>20, bufBytes>>20)
	}
	if after.HeapReleased < bufBytes*3/4 {
		t.Fatalf("heap released %d MB after the release: want most of the %d MB of buffers returned", after.HeapReleased>>20, bufBytes>>20)
	}

	// A small drop (one session's worth) does not collect.
	var gcs runtime.MemStats
	runtime.ReadMemStats(&gcs)
	b1, b2 := getPollBuf(), getPollBuf()
	putPollBuf(b1)
	putPollBuf(b2)
	releaseNext.Store(0)
	releaseBuffers(&log, now.Add(time.Minute))
	var gcs2 runtime.MemStats
	runtime.ReadMemStats(&gcs2)
	if gcs2.NumForcedGC != gcs.NumForcedGC {
		t.Fatalf("forced collections %d → %d for a drop of 2 buffers", gcs.NumForcedGC, gcs2.NumForcedGC)
	}
}
