package router

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The relay's system calls on its nonblocking sockets go in raw: none of
// them waits, and a call the runtime is told of (entersyscall) is one that
// sysmon may hand the thread's P away from when the kernel preempts the
// thread mid-call, which on a saturated machine starts another OS thread
// for the goroutines left behind. Ramping up 9,700 stalled sessions on two
// busy cores took a node from 8 to 21 threads that way, and Go never
// lets a thread go. A raw call keeps its P for the microseconds it takes.
//
// Only calls that cannot block belong here: reads and writes on
// O_NONBLOCK sockets, epoll_ctl, shutdown, and close of a socket without
// SO_LINGER.

func rawRead(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawClose(fd int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}

func rawShutdown(fd, how int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0); e != 0 {
		return e
	}
	return nil
}

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	if _, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0); e != 0 {
		return e
	}
	return nil
}

func bufPtr(p []byte) unsafe.Pointer {
	if len(p) == 0 {
		return nil
	}
	return unsafe.Pointer(&p[0])
}
