package logx

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type recorder struct {
	mu  sync.Mutex
	got []Summary
}

func (r *recorder) emit(s Summary) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
}

func (r *recorder) lines() []Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Summary(nil), r.got...)
}

// TestFloodIsOneLinePerInterval: 10,000 events within a second give the
// first at once and one summary of the rest when the interval ends; a
// later event, after a quiet interval, is reported at once again.
func TestFloodIsOneLinePerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		s := New(10*time.Second, r.emit)
		defer s.Stop()
		for i := range 10000 {
			reason := "decode"
			if i%2 == 1 {
				reason = "decrypt"
			}
			s.Add(reason, "packet")
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if got := r.lines(); len(got) != 1 || got[0].Count != 1 || got[0].Reason != "decode" {
			t.Fatalf("during the flood: %+v; want one line for the first event", got)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		got := r.lines()
		if len(got) != 2 || got[1].Count != 9999 || got[1].Reason != "decrypt" ||
			got[1].Reasons["decode"] != 4999 || got[1].Reasons["decrypt"] != 5000 {
			t.Fatalf("after the interval: %+v; want a summary of 9999 (4999 decode, 5000 decrypt)", got)
		}
		// An empty interval closes the window.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := len(r.lines()); n != 2 {
			t.Fatalf("%d lines after a quiet interval; want 2", n)
		}
		s.Add("label", "late")
		if got := r.lines(); len(got) != 3 || got[2].Count != 1 || got[2].Reason != "label" {
			t.Fatalf("after quiet: %+v; want the event at once", got)
		}
	})
}

// TestStopFlushes: Stop reports what is pending at once, and events after
// it are reported one by one, with no timer left behind.
func TestStopFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		s := New(time.Minute, r.emit)
		s.Add("a", "1")
		s.Add("b", "2")
		s.Add("b", "3")
		s.Stop()
		got := r.lines()
		if len(got) != 2 || got[1].Count != 2 || got[1].Detail != "3" {
			t.Fatalf("after Stop: %+v; want the pending two at once", got)
		}
		s.Add("c", "4")
		s.Stop()
		if got := r.lines(); len(got) != 3 || got[2].Reason != "c" {
			t.Fatalf("after Stop: %+v; want each event reported", got)
		}
	})
}
