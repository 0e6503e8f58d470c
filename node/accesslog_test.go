package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshlb/meshlb/router"
)

// TestAccessLogReopen: after the file is moved away (logrotate) and the
// log reopened (SIGHUP), the lines before are in the old file and the
// lines after in a new one at the path, none lost.
func TestAccessLogReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := openAccessLog(path, false, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	go l.run()
	defer l.close()
	end := &router.SessionEnd{Start: time.Now(), Key: "raw-key", Pool: "rides", Backend: "b1", CloseCode: 1000, ClosedBy: "client"}
	l.session("n0", end)
	waitFor(t, 5*time.Second, "first line encoded", func() (bool, string) { return l.Written() == 1, "" })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Reopen()
	waitFor(t, 5*time.Second, "file reopened", func() (bool, string) {
		_, err := os.Stat(path)
		return err == nil, "no new file yet"
	})
	l.request("n0", &router.RequestEnd{Start: time.Now(), Method: "GET", Path: "/", Status: 200, Backend: "b1"})
	l.close()
	if got := accessLines(t, path+".1", "ws"); len(got) != 1 || got[0].Key != "" || got[0].KeyHash != keyHash("raw-key") || got[0].Pool != "rides" {
		t.Errorf("rotated file: %+v; want the session line, hashed key only", got)
	}
	if got := accessLines(t, path, "http"); len(got) != 1 || got[0].Status != 200 {
		t.Errorf("new file: %+v; want the request line", got)
	}
	if l.Dropped() != 0 {
		t.Errorf("%d dropped", l.Dropped())
	}
}

func TestAccessLogUnwritablePathFailsStart(t *testing.T) {
	cfg := testConfig(t, "n0")
	cfg.AccessLog = filepath.Join(t.TempDir(), "no", "such", "dir", "access.log")
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(t.Context()); err == nil {
		stopNode(n)
		t.Fatal("started with an access log it cannot open")
	}
}
