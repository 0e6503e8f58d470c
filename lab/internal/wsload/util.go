//go:build linux

package wsload

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// FreePort returns a loopback host:port that was free a moment ago.
func FreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// RaiseNofile lifts this process's open-file limit to its hard limit
// (children inherit it) and returns it.
func RaiseNofile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	return l.Cur, nil
}

// HTTPStatus GETs url and returns the status code.
func HTTPStatus(url string) (int, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Metrics reads a meshlb node's /metrics (admin is its admin host:port)
// into name → value for unlabelled series.
func Metrics(admin string) (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second} // a stuck node must not stall the reader
	resp, err := c.Get("http://" + admin + "/metrics")
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

// Ready reports whether the meshlb node with admin address admin answers
// /readyz with 200 and has backends backends in its ring; code is what
// /readyz answered, n the backends.
func Ready(admin string, backends int) (ok bool, code int, n float64) {
	code, _ = HTTPStatus("http://" + admin + "/readyz")
	m, _ := Metrics(admin)
	n = m["meshlb_ring_backends"]
	return code == 200 && n == float64(backends), code, n
}

// Median returns the median of xs (which it does not reorder).
func Median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// Num formats a figure with 2 decimals below 10, 1 below 1000, none above.
func Num(x float64) string {
	switch {
	case x >= 1000:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case x >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 2, 64)
	}
}
