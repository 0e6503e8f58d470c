//go:build !linux

package threadtrim

// Threads cannot be read here.
func Threads() (int, bool) { return 0, false }
