package gossip

import (
	"bytes"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// logWriter is memberlist's LogOutput: it maps lines such as
// "2026/01/02 15:04:05 [WARN] memberlist: Refuting a suspect message" onto
// zerolog levels, with component=memberlist, and counts them by level.
type logWriter struct {
	log   zerolog.Logger
	lines *prometheus.CounterVec
}

func (w *logWriter) Write(p []byte) (int, error) {
	for line := range bytes.Lines(p) {
		w.line(string(bytes.TrimRight(line, "\r\n")))
	}
	return len(p), nil
}

func (w *logWriter) line(s string) {
	level, name, text := zerolog.InfoLevel, "info", s
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			switch s[i+1 : i+j] {
			case "DEBUG", "TRACE":
				level, name = zerolog.DebugLevel, "debug"
			case "INFO":
				level, name = zerolog.InfoLevel, "info"
			case "WARN", "WARNING":
				level, name = zerolog.WarnLevel, "warn"
			case "ERR", "ERROR":
				level, name = zerolog.ErrorLevel, "error"
			}
			text = strings.TrimSpace(s[i+j+1:])
		}
	}
	if text == "" {
		return
	}
	text = strings.TrimPrefix(text, "memberlist: ")
	if level > zerolog.DebugLevel && strings.Contains(text, "use of closed network connection") {
		// memberlist's loops race its own Shutdown closing the sockets.
		level, name = zerolog.DebugLevel, "debug"
	}
	w.lines.WithLabelValues(name).Inc()
	if e := w.log.WithLevel(level); e.Enabled() {
		e.Str("line", text).Msg("memberlist")
	}
}
