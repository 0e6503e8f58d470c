package router

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// sessionEnds collects what OnSessionEnd reports.
type sessionEnds struct {
	mu   sync.Mutex
	ends []SessionEnd
}

func (s *sessionEnds) add(e *SessionEnd) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ends = append(s.ends, *e)
}

func (s *sessionEnds) wait(t *testing.T) SessionEnd {
	t.Helper()
	var e SessionEnd
	waitFor(t, "a session end", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.ends) == 0 {
			return false
		}
		e = s.ends[0]
		return true
	})
	return e
}

// TestSessionEndReports: who closed a session and with which code, in
// both relays (epoll and goroutines), its bytes and key, and the
// per-backend counters.
func TestSessionEndReports(t *testing.T) {
	closer := newBackend(t, "closer", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Close(4000, "done")
	}))
	echo := newBackend(t, "echo", echoWS("echo", nil, nil))
	for _, goroutines := range []bool{false, true} {
		for _, tc := range []struct {
			name     string
			backend  Backend
			close    func(rt *Router, c *websocket.Conn)
			code     uint16
			closedBy string
		}{
			{"backend closes", closer, func(_ *Router, c *websocket.Conn) { readCloseStatus(t, c, 5*time.Second) }, 4000, ClosedByBackend},
			{"client closes", echo, func(_ *Router, c *websocket.Conn) {
				roundTrip(t, c, websocket.MessageText, []byte("hello"))
				c.Close(websocket.StatusNormalClosure, "")
			}, 1000, ClosedByClient},
			{"node drains", echo, func(rt *Router, c *websocket.Conn) {
				roundTrip(t, c, websocket.MessageText, []byte("hello"))
				go func() { _ = rt.Drain(context.Background(), CloseServiceRestart, 0) }()
				readCloseStatus(t, c, 5*time.Second)
			}, CloseServiceRestart, ClosedByNode},
		} {
			name := tc.name
			if goroutines {
				name += " (goroutines)"
			}
			t.Run(name, func(t *testing.T) {
				var ends sessionEnds
				var handshakes []string
				var hmu sync.Mutex
				rt, front := newFront(t, Config{
					Picker:       &fixedPicker{backends: []Backend{tc.backend}},
					OnSessionEnd: ends.add,
					OnHandshake: func(b, result string, _ time.Duration) {
						hmu.Lock()
						handshakes = append(handshakes, b+"/"+result)
						hmu.Unlock()
					},
				})
				rt.pollFailed = goroutines
				c, _ := dial(t, wsURL(front, "/p?session_id=sid-1"), nil)
				tc.close(rt, c)
				e := ends.wait(t)
				if e.CloseCode != tc.code || e.ClosedBy != tc.closedBy || e.Backend != tc.backend.ID ||
					e.Key != "sid-1" || e.KeySource != "query:session_id" || e.Path != "/p" {
					t.Fatalf("session end %+v; want code %d closed by %s", e, tc.code, tc.closedBy)
				}
				if e.BytesIn <= 0 || e.BytesOut <= 0 {
					t.Errorf("bytes in %d, out %d", e.BytesIn, e.BytesOut)
				}
				hmu.Lock()
				if len(handshakes) != 1 || handshakes[0] != tc.backend.ID+"/ok" {
					t.Errorf("handshakes %v", handshakes)
				}
				hmu.Unlock()
				tr := rt.Traffic(true)
				if len(tr) != 1 || tr[0].Sessions != 0 || tr[0].BytesIn != e.BytesIn || tr[0].BytesOut != e.BytesOut {
					t.Errorf("traffic %+v; want the session's bytes and none open", tr)
				}
			})
		}
	}
}

// TestRequestEndReports: a plain request's status, bytes, backend and
// failovers, and one that found no backend.
func TestRequestEndReports(t *testing.T) {
	var mu sync.Mutex
	var got []RequestEnd
	b := newBackend(t, "b1", httpEcho("b1"))
	dead := Backend{ID: "dead", Addr: refusingAddr(t)}
	_, front := newFront(t, Config{
		Picker: &fixedPicker{backends: []Backend{dead, b}},
		OnRequestEnd: func(r *RequestEnd) {
			mu.Lock()
			got = append(got, *r)
			mu.Unlock()
		},
	})
	res := get(t, front.URL+"/x?session_id=k", nil)
	body := readBody(t, res)
	res = get(t, front.URL+"/x", nil) // keyed by the client IP
	readBody(t, res)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d reports; want 2", len(got))
	}
	r := got[0]
	if r.Status != 200 || r.Backend != "b1" || r.Failovers != 1 || r.BytesOut != int64(len(body)) || r.Method != "GET" || r.Path != "/x" || r.Key != "k" {
		t.Fatalf("report %+v", r)
	}
	if r := got[1]; r.KeySource != "ip" || r.ClientIP != "127.0.0.1" || r.Status != 200 {
		t.Fatalf("report %+v; want keyed by ip 127.0.0.1", r)
	}
}
