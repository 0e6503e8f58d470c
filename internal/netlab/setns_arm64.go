//go:build linux

package netlab

import "syscall"

const sysSetns = syscall.SYS_SETNS
