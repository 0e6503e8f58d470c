//go:build unix

package node

import (
	"net"
	"testing"
)

// TestWaitQueuedSeesBacklog checks the poll shed relies on: it reports a
// client only once one is in the backlog, and takes no descriptor to see
// it (the client is still there for Accept afterwards).
func TestWaitQueuedSeesBacklog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if queued, ok := waitQueued(ln); !ok || queued {
		t.Fatalf("empty backlog: queued=%v ok=%v; want false, true", queued, ok)
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	queued := false
	for range 100 { // the handshake completes asynchronously
		var ok bool
		if queued, ok = waitQueued(ln); !ok {
			t.Fatal("waitQueued cannot poll a TCP listener")
		}
		if queued {
			break
		}
	}
	if !queued {
		t.Fatal("client in the backlog not reported")
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept after poll: %v", err)
	}
	s.Close()
	if _, ok := waitQueued(&net.TCPListener{}); ok {
		t.Fatal("zero listener reported pollable")
	}
}
