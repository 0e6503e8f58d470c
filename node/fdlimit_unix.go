//go:build unix

package node

import "syscall"

// raiseFDLimit sets the soft open-file limit to the hard one and returns
// the soft limit in force. Go (1.19 and later) already does this when a
// program starts; doing it here too keeps the node right when embedded in
// a process that lowered it, and tells the caller the number. 0 means
// unknown.
func raiseFDLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	return uint64(lim.Cur)
}
