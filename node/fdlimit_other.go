//go:build !unix

package node

// raiseFDLimit does nothing where there is no RLIMIT_NOFILE; 0 means
// unknown, and the connection limit stays unlimited.
func raiseFDLimit() uint64 { return 0 }
