package logx

import (
	"log"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Limiter lets one log line through per Period (default one second) and
// counts the rest, so a repeated warning costs one line a second and says
// how many it stands for. It is lock-free: Allow is cheap enough for the
// request path. The zero value is ready to use.
type Limiter struct {
	Period  time.Duration
	next    atomic.Int64 // unix nanos before which lines are suppressed
	dropped atomic.Int64
}

// Allow reports whether a line may be logged now and how many were
// suppressed since the last one that was.
func (l *Limiter) Allow() (bool, int64) {
	period := l.Period
	if period <= 0 {
		period = time.Second
	}
	now := time.Now().UnixNano()
	n := l.next.Load()
	if now < n || !l.next.CompareAndSwap(n, now+int64(period)) {
		l.dropped.Add(1)
		return false, 0
	}
	return true, l.dropped.Swap(0)
}

// StdLogger returns a *log.Logger for libraries that log through one
// (net/http's ErrorLog, httputil.ReverseProxy): each line becomes an event
// at level with the constant message msg and the line in the field
// "detail".
func StdLogger(l zerolog.Logger, level zerolog.Level, msg string) *log.Logger {
	return log.New(stdWriter{l: l, level: level, msg: msg}, "", 0)
}

type stdWriter struct {
	l     zerolog.Logger
	level zerolog.Level
	msg   string
}

func (w stdWriter) Write(p []byte) (int, error) {
	if e := w.l.WithLevel(w.level); e.Enabled() {
		e.Str("detail", strings.TrimSpace(string(p))).Msg(w.msg)
	}
	return len(p), nil
}
