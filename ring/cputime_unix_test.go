//go:build unix

package ring

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time (user + system) the test process has used, so
// that build costs can be read on a machine shared with other jobs, where
// wall time mostly measures the queue for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
