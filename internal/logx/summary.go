package logx

import (
	"sync"
	"time"
)

// Summary is a count of events with the last one's reason and detail.
type Summary struct {
	Count  int64
	Reason string // the last event's reason, one of a small bounded set
	Detail string // the last event's own text
	// Reasons counts the events by reason (nil when Count is 1).
	Reasons map[string]int64
}

// Summarizer turns a flood of like events into a bounded number of log
// lines: the first event of a quiet period is reported at once, the ones
// that follow within an interval as one summary when it ends. A node under
// attack (garbage gossip packets, a listener out of file descriptors) then
// writes a line per interval, not one per packet. It knows nothing of
// loggers: the caller's emit writes the line.
//
// Summarizer batches events. Its methods are safe for concurrent use.
// Emit is called from Add, from a timer's goroutine, or from Stop, one
// call at a time, and must not call back into the Summarizer.
type Summarizer struct {
	interval time.Duration
	emit     func(Summary)

	mu      sync.Mutex
	emitMu  sync.Mutex  // serialises emit
	timer   *time.Timer // non-nil while a window is open
	pending Summary
	stopped bool
}

// New returns a Summarizer that reports at most one summary per interval
// after the first event, through emit.
func New(interval time.Duration, emit func(Summary)) *Summarizer {
	return &Summarizer{interval: interval, emit: emit}
}

// Add records one event. It never blocks on I/O other than emit.
func (s *Summarizer) Add(reason, detail string) {
	s.mu.Lock()
	if s.timer == nil || s.stopped {
		// Quiet (or stopped): report this one now and open a window
		// for those that follow.
		if !s.stopped {
			s.timer = time.AfterFunc(s.interval, s.flush)
		}
		s.mu.Unlock()
		s.send(Summary{Count: 1, Reason: reason, Detail: detail})
		return
	}
	p := &s.pending
	p.Count++
	p.Reason, p.Detail = reason, detail
	if p.Reasons == nil {
		p.Reasons = make(map[string]int64, 4)
	}
	p.Reasons[reason]++
	s.mu.Unlock()
}

// flush ends a window: it reports what the window held and, if it held
// anything, opens the next one; an empty window closes, so the next
// event is reported at once again.
func (s *Summarizer) flush() {
	s.mu.Lock()
	p := s.pending
	s.pending = Summary{}
	if p.Count == 0 || s.stopped {
		s.timer = nil
	} else {
		s.timer.Reset(s.interval)
	}
	s.mu.Unlock()
	if p.Count > 0 {
		s.send(p)
	}
}

func (s *Summarizer) send(p Summary) {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.emit(p)
}

// Stop reports what is pending now and stops the timer; events after it
// are reported one by one. It is safe to call more than once. Call it
// before the logger goes away (a test's logger must not be written to
// once the test has ended).
func (s *Summarizer) Stop() {
	s.mu.Lock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	p := s.pending
	s.pending = Summary{}
	s.mu.Unlock()
	if p.Count > 0 {
		s.send(p)
	}
}
