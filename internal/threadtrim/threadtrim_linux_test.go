package threadtrim

import (
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestTrimEndsABurstsThreads holds 40 threads in blocking system calls at
// once, lets them go, and trims: the process is back near its target,
// where without Trim it keeps every one.
func TestTrimEndsABurstsThreads(t *testing.T) {
	if _, ok := Threads(); !ok {
		t.Skip("no thread count here (Linux /proc only)")
	}
	base, _ := Threads()
	const burst = 40
	var fds [burst][2]int
	for i := range fds {
		if err := syscall.Pipe(fds[i][:]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range burst {
		wg.Go(func() {
			var b [1]byte
			// A blocking read of a blocking pipe holds its thread.
			_, _ = syscall.Read(fds[i][0], b[:])
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := Threads(); n < base+burst/2; n, _ = Threads() {
		if time.Now().After(deadline) {
			t.Fatalf("threads %d: the burst did not start threads", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range fds {
		syscall.Write(fds[i][1], []byte{1})
	}
	wg.Wait()
	for i := range fds {
		syscall.Close(fds[i][0])
		syscall.Close(fds[i][1])
	}
	peak, _ := Threads()
	target := runtime.GOMAXPROCS(0) + Slack
	ended := 0
	for range 4 { // maxPerRound each; a round may stop early on a busy machine
		ended += Trim(target)
	}
	after, _ := Threads()
	t.Logf("threads: base %d, after the burst %d, after Trim %d (ended %d, target %d)", base, peak, after, ended, target)
	if after > max(target, base)+2 {
		t.Fatalf("%d threads after Trim; want at most %d", after, max(target, base)+2)
	}
}
