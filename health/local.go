package health

import (
	"errors"
	"syscall"
	"time"
)

// A check that fails because of this node, not the backend, must not
// count as the backend being down: a node out of file descriptors fails
// every connect with EMFILE and would vote every backend down at once.
// Its peers outvote it, but only while they are not starved too (all
// nodes of a mesh often hit the same limit under the same load). Such a
// check abstains: it counts neither way, and the node's view of the
// backend stays as it was.

// LocalError reports whether err, from a connect or a check, is about
// this node's own resources rather than the backend: out of file
// descriptors (EMFILE, ENFILE), of buffer space or memory (ENOBUFS,
// ENOMEM), or of local ports (EADDRNOTAVAIL: no free ephemeral port or
// local address to connect from).
func LocalError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// starvedLate is how much later than due a check may start before the
// node is taken to be starved of CPU. A Go timer fires within
// microseconds on an idle machine and within milliseconds on a busy one;
// a second late means the process was not scheduled, and a timeout it
// measures may be its own slowness.
const starvedLate = time.Second

// starved reports whether a check's timing shows this node starved of
// CPU rather than the backend slow: its timer fired late by more than
// starvedLate, or it took longer than twice its own timeout (the
// deadline that should have ended it fired late).
func starved(late, took, timeout time.Duration) bool {
	return late > starvedLate || took > 2*timeout+starvedLate/2
}

// abstain reports whether a failed check of backend id must not count:
// err is a local error, or the timing (late start, took) shows the node
// starved. It counts and logs (sampled) the abstention.
func (c *Checker) abstain(id string, err error, late, took time.Duration) bool {
	var why string
	switch {
	case LocalError(err):
		why = "local resource error"
	case starved(late, took, c.cfg.Timeout):
		why = "node starved of cpu"
	default:
		return false
	}
	c.abstained.Add(1)
	c.abstainLog.Warn().Str("backend", id).Str("why", why).AnErr("check_error", err).
		Dur("late", late).Dur("took", took).Msg("health check abstained")
	return true
}

// Abstained returns how many failed checks (active or passive) did not
// count because the fault was this node's.
func (c *Checker) Abstained() uint64 { return c.abstained.Load() }
