//go:build linux

package wsload

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// UserHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on
// every Linux ABI.
const UserHZ = 100

// PerMsg is µs of CPU per message: ticks over msgs messages.
func PerMsg(ticks int64, msgs float64) float64 { return float64(ticks) * 1e6 / UserHZ / msgs }

// RSS returns VmRSS and RssAnon of pid in KiB (0 if it cannot be read).
func RSS(pid int) (vm, anon int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(data)) {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			vm = n
		case "RssAnon":
			anon = n
		}
	}
	return vm, anon
}

// VmRSS returns the sum of the VmRSS of pids in KiB.
func VmRSS(pids ...int) int64 {
	var sum int64
	for _, pid := range pids {
		vm, _ := RSS(pid)
		sum += vm
	}
	return sum
}

// CPUTicks returns the sum of utime+stime of pids in USER_HZ ticks.
func CPUTicks(pids ...int) int64 {
	var sum int64
	for _, pid := range pids {
		sum += cpuTicks(pid)
	}
	return sum
}

func cpuTicks(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// Settle waits until the summed VmRSS of pids stops moving (within 0.5%
// over a second, at most 10s): they are other programs, so their GC cannot
// be forced.
func Settle(pids ...int) {
	prev := VmRSS(pids...)
	for range 10 {
		time.Sleep(time.Second)
		cur := VmRSS(pids...)
		if d := cur - prev; d*200 <= prev && -d*200 <= prev {
			return
		}
		prev = cur
	}
}

// Proc is a process under test.
type Proc struct {
	Name   string
	Cmd    *exec.Cmd
	Exited chan struct{} // closed once Cmd.Wait has returned (nil: not ours to wait for)
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Pids returns the ids of ps.
func Pids(ps []*Proc) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p.Pid()
	}
	return out
}

// Start starts cmd as name, to be killed if the bench dies; wait, run in a
// goroutine, must call cmd.Wait (and whatever must precede or follow it);
// Exited is closed when it returns.
func Start(name string, cmd *exec.Cmd, wait func()) (*Proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Exited: make(chan struct{})}
	go func() {
		wait()
		close(p.Exited)
	}()
	return p, nil
}

// Stop sends SIGTERM to every process (an NGINX master takes its workers
// along), then waits for each, killing one still there 40s later. It
// returns those it had to kill.
func Stop(ps []*Proc) (killed []*Proc) {
	for _, p := range ps {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range ps {
		select {
		case <-p.Exited:
		case <-time.After(40 * time.Second):
			_ = p.Cmd.Process.Kill()
			<-p.Exited
			killed = append(killed, p)
		}
	}
	return killed
}
