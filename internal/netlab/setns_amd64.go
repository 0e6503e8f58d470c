//go:build linux

package netlab

// sysSetns is setns(2): the syscall package names it on arm64 but not on
// amd64.
const sysSetns = 308
