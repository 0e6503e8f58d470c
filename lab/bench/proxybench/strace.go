//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshlb/meshlb/lab/internal/wsload"
)

// syscallCount is what strace -c saw one proxy do for a number of
// handshakes: the calls of every thread, per handshake, and the most
// frequent ones.
type syscallCount struct {
	perHS float64
	top   []string // "name n/hs", most frequent first
}

// straceHandshakes attaches strace -f -c to t's processes (every thread),
// runs n handshakes, and counts the system calls per handshake. strace
// slows the proxy down, so no rate is read here: only the count, which
// is what an event loop that owns its sockets saves.
func (b *bench) straceHandshakes(t *target, n int) (syscallCount, error) {
	bin, err := exec.LookPath("strace")
	if err != nil {
		return syscallCount{}, fmt.Errorf("strace not installed: %w", err)
	}
	out := filepath.Join(b.dir, "strace-"+t.name+".txt")
	args := []string{"-f", "-c", "-q", "-o", out}
	for _, pid := range wsload.Pids(t.procs) {
		args = append(args, "-p", strconv.Itoa(pid))
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return syscallCount{}, err
	}
	// Attaching to every thread takes a moment; calls made before it
	// completes are not counted, so wait for the proxy to be idle again.
	time.Sleep(time.Second)
	url := b.url(t, "strace")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := 0
	for range 20 {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				c, _, err := wsload.Dial(ctx, url(i), i)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Second) // the closes are torn down
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	if firstErr != nil {
		return syscallCount{}, firstErr
	}
	return parseStraceC(out, n)
}

// parseStraceC reads strace -c's table: "% time seconds usecs/call calls
// [errors] syscall", one row per call and a total.
func parseStraceC(path string, n int) (syscallCount, error) {
	f, err := os.Open(path)
	if err != nil {
		return syscallCount{}, err
	}
	defer f.Close()
	var res syscallCount
	type row struct {
		name  string
		calls float64
	}
	var rows []row
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 || fs[0] == "%" || strings.HasPrefix(fs[0], "-") {
			continue
		}
		calls, err := strconv.ParseFloat(fs[3], 64)
		if err != nil {
			continue
		}
		name := fs[len(fs)-1]
		if name == "total" {
			res.perHS = calls / float64(n)
			continue
		}
		rows = append(rows, row{name, calls})
	}
	if res.perHS == 0 {
		return res, fmt.Errorf("strace output %s has no total", path)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].calls > rows[j].calls })
	for _, r := range rows[:min(len(rows), 8)] {
		res.top = append(res.top, fmt.Sprintf("%s %.1f", r.name, r.calls/float64(n)))
	}
	return res, nil
}

// toBestPeer is meshlb's figure over the best of HAProxy's and NGINX's
// (the higher or the lower, as higher says is better): below 1 is ahead
// on a "less is better" figure, above 1 on a rate.
func (b *bench) toBestPeer(fig func(*target) float64, higher bool) string {
	var mesh float64
	best, found := 0.0, false
	for _, t := range b.targets {
		if len(t.res) == 0 {
			continue
		}
		v := fig(t)
		if v == 0 {
			continue // not measured
		}
		switch t.name {
		case "meshlb":
			mesh = v
		case "haproxy", "nginx":
			if !found || (higher && v > best) || (!higher && v < best) {
				best, found = v, true
			}
		}
	}
	if mesh == 0 || !found || best == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", mesh/best)
}

// printSyscalls prints the system calls per handshake row and, below the
// table, the most frequent calls of each proxy.
func (b *bench) printSyscalls() {
	var any bool
	for _, t := range b.targets {
		any = any || t.sys != nil
	}
	if !any {
		return
	}
	fmt.Printf("%-34s", "system calls per handshake")
	for _, t := range b.targets {
		cell := "-"
		if t.sys != nil {
			cell = fmt.Sprintf("%.1f", t.sys.perHS)
		}
		fmt.Printf(" %16s", cell)
	}
	fmt.Printf(" %16s\n", b.toBestPeer(func(t *target) float64 {
		if t.sys == nil {
			return 0
		}
		return t.sys.perHS
	}, false))
	fmt.Printf("\nsystem calls per handshake (strace -f -c, %d handshakes, 20 at a time):\n", b.o.straceHS)
	for _, t := range b.targets {
		if t.sys != nil {
			fmt.Printf("  %-7s %.1f: %s\n", t.name, t.sys.perHS, strings.Join(t.sys.top, ", "))
		}
	}
}
