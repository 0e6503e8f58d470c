//go:build unix

package node

import (
	"errors"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// queuedWaitSlice bounds one blocking poll(2), so that Close (which
// waits for the descriptor's users) and a retake of a lost reserve are at
// most this late.
const queuedWaitSlice = 50 * time.Millisecond

// waitQueued blocks until a connection is queued on ln, without taking a
// descriptor, for at most queuedWaitSlice. ok is false when ln cannot be
// polled; the caller then falls back to accepting blind.
//
// It exists because on Linux accept4 fails with EMFILE before it looks at
// the queue: the error does not mean a client is waiting, and freeing the
// reserve then to accept would leave the slot free, the goroutine parked
// in Accept, for any other thread of the process to take. The netpoller
// cannot wait here (net refuses RawConn.Read on a listener), so this polls
// level-triggered on the accept goroutine's thread.
func waitQueued(ln net.Listener) (queued, ok bool) { return pollQueued(ln, queuedWaitSlice) }

// moreQueued reports whether another client waits on ln now, without
// waiting; false if ln cannot be polled.
func moreQueued(ln net.Listener) bool {
	queued, _ := pollQueued(ln, 0)
	return queued
}

// readNow reads what c's client has sent so far into buf, without
// waiting; ok is false if c cannot be read that way.
func readNow(c net.Conn, buf []byte) (ok bool) {
	sc, isConn := c.(syscall.Conn)
	if !isConn {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return rc.Read(func(fd uintptr) bool {
		for {
			if _, err := unix.Read(int(fd), buf); err != unix.EINTR {
				return true // data, EOF or EAGAIN: done either way
			}
		}
	}) == nil
}

func pollQueued(ln net.Listener, wait time.Duration) (queued, ok bool) {
	sc, isConn := ln.(syscall.Conn)
	if !isConn {
		return false, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	var perr error
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			var n int
			n, perr = unix.Poll(fds, int(wait/time.Millisecond))
			if errors.Is(perr, unix.EINTR) {
				continue
			}
			queued = perr == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
			return
		}
	})
	if err != nil || perr != nil {
		return false, false
	}
	return queued, true
}
