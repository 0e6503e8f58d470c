//go:build linux

package main

import "github.com/meshlb/meshlb/lab/internal/wsload"

// The lab's readings of a node, through the helpers make bench uses too.

// readRSS returns VmRSS of pid in KiB (0 if it cannot be read).
func readRSS(pid int) int64 { return wsload.VmRSS(pid) }

// cpuTicks returns utime+stime of pid in USER_HZ (100/s) ticks.
func cpuTicks(pid int) int64 { return wsload.CPUTicks(pid) }

// httpStatus GETs url and returns the status code.
func httpStatus(url string) (int, error) { return wsload.HTTPStatus(url) }

// metrics reads a node's /metrics into name → value for unlabelled series.
func metrics(adminAddr string) (map[string]float64, error) { return wsload.Metrics(adminAddr) }

// ready reports whether a node answers /readyz with 200 and has want
// backends in its ring.
func ready(adminAddr string, want int) (ok bool, code int, n float64) {
	return wsload.Ready(adminAddr, want)
}
