//go:build linux

package main

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshlb/meshlb/lab/internal/wsload"
)

// readRSS returns VmRSS of pid in KiB (0 if it cannot be read).
func readRSS(pid int) int64 { return wsload.VmRSS(pid) }

// cpuTicks returns utime+stime of pid in USER_HZ (100/s) ticks.
func cpuTicks(pid int) int64 { return wsload.CPUTicks(pid) }

// httpStatus GETs url and returns the status code.
func httpStatus(url string) (int, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// metrics reads a node's /metrics into name → value for unlabelled series.
func metrics(adminAddr string) (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

// ready reports whether a node answers /readyz with 200 and has want
// backends in its ring.
func ready(adminAddr string, want int) (ok bool, code int, n float64) {
	code, _ = httpStatus("http://" + adminAddr + "/readyz")
	m, _ := metrics(adminAddr)
	n = m["meshlb_ring_backends"]
	return code == 200 && n == float64(want), code, n
}
