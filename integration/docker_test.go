package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// docker is how this test reaches Docker: the engine CLI and whichever
// Compose there is ("docker compose" or the older "docker-compose").
type docker struct {
	t       *testing.T
	compose []string // command and leading arguments
	project string
	file    string
	env     []string
}

// needDocker skips the test where Docker can't be used: no docker CLI, no
// reachable daemon, or no Compose.
func needDocker(t *testing.T) *docker {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped under -short: builds an image and runs containers")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker not found on PATH: skipping the Docker Compose test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("docker daemon unreachable (%v): skipping the Docker Compose test\n%s", err, out)
	}
	d := &docker{t: t}
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		d.compose = []string{"docker", "compose"}
	} else if p, err := exec.LookPath("docker-compose"); err == nil {
		d.compose = []string{p}
	} else {
		t.Skip("neither `docker compose` nor docker-compose found: skipping the Docker Compose test")
	}
	return d
}

// run runs a command with the test's environment and a deadline and
// returns its combined output.
func (d *docker) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = d.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *docker) composeArgs(args ...string) (string, []string) {
	all := append(append(append([]string(nil), d.compose[1:]...), "-p", d.project, "-f", d.file), args...)
	return d.compose[0], all
}

func (d *docker) composeRun(timeout time.Duration, args ...string) string {
	d.t.Helper()
	name, all := d.composeArgs(args...)
	out, err := d.run(timeout, name, all...)
	if err != nil {
		d.t.Fatalf("%s %s: %v\n%s", name, strings.Join(all, " "), err, out)
	}
	return out
}

// The stack of deploy/compose.yaml, from an image built here: bench runs
// against the "meshlb" alias, one node is killed under load, the sessions
// come back to their backends through the others and the verdict is a
// pass. Everything is torn down whatever happens.
func TestDockerComposeBenchSurvivesNodeKill(t *testing.T) {
	d := needDocker(t)
	start := time.Now()
	d.project = fmt.Sprintf("meshlbinteg%d%04x", os.Getpid(), rand.IntN(1<<16))
	tag := "meshlb:" + d.project
	var err error
	if d.file, err = filepath.Abs("../deploy/compose.yaml"); err != nil {
		t.Fatal(err)
	}
	// MESHLB_IMAGE is read by Compose for the image name, not by meshlb.
	d.env = append(filterEnv(os.Environ()), "MESHLB_IMAGE="+tag)

	// The image, built as `make image` does, from a context holding only
	// the Dockerfile and the static binary.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin", "docker"), 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "bin", "docker", "meshlb"), "../cmd/meshlb")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.run(time.Minute, "docker", "rmi", "-f", tag) })
	if out, err := d.run(3*time.Minute, "docker", "build", "-q", "-t", tag, dir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Logf("image %s built after %v", tag, time.Since(start).Round(100*time.Millisecond))

	t.Cleanup(func() {
		if t.Failed() {
			name, args := d.composeArgs("logs", "--no-color", "--tail", "40")
			out, _ := d.run(time.Minute, name, args...)
			t.Logf("compose logs:\n%s", out)
		}
		name, args := d.composeArgs("down", "-v", "--remove-orphans", "-t", "2")
		if out, err := d.run(2*time.Minute, name, args...); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	d.composeRun(3*time.Minute, "up", "-d")

	// The bench, in the stack's network, through the alias. It says on
	// stderr when its sessions start; a few seconds later one node dies.
	name, args := d.composeArgs("run", "--rm", "-T", "bench", "bench", "--json", "--log-level", "info",
		"--target", "meshlb:8080", "--admin", "meshlb:9901", "--wait-ready", "60s", "--wait-members", "3",
		"--sessions", "150", "--duration", "20s", "--whoami-interval", "500ms", "--seed", "5")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = d.env
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	var errLog bytes.Buffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(io.TeeReader(stderr, &errLog))
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), `"bench started"`) {
				once = true
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-copied:
		cmd.Wait()
		t.Fatalf("bench ended before its sessions started\n%s", errLog.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("bench did not start\n%s", errLog.String())
	}
	time.Sleep(6 * time.Second)
	d.composeRun(time.Minute, "kill", "meshlb-2")
	t.Logf("killed meshlb-2 after %v", time.Since(start).Round(100*time.Millisecond))
	<-copied
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r benchReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("bench exit %d, no report: %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), errLog.String())
	}
	t.Logf("bench exit %d after %v: %s", code, time.Since(start).Round(100*time.Millisecond), strings.Join(strings.Fields(stdout.String()), " "))
	if code != 0 || r.Verdict != "pass" || r.Misroutes != 0 {
		t.Fatalf("exit %d, verdict %s %v, %d misroutes; want exit 0 and a pass", code, r.Verdict, r.Reasons, r.Misroutes)
	}
	if r.SessionsAnswered != 150 || r.SessionsMoved != 0 || len(r.Backends) != 3 {
		t.Fatalf("%d of 150 sessions answered, %d moved, backends %v; want all answered on all three, none moved", r.SessionsAnswered, r.SessionsMoved, r.Backends)
	}
	if r.Reconnects == 0 {
		t.Fatalf("no reconnects: the kill of meshlb-2 missed the load (disconnects %v)", r.Disconnects)
	}
}
