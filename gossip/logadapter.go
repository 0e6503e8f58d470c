package gossip

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/logx"
)

// rejectSummaryInterval is how often a flood of refused packets is
// summed up in one line. memberlist writes a line per refused packet:
// 10,000 garbage packets gave 9,623 error lines.
const rejectSummaryInterval = 10 * time.Second

// logWriter is memberlist's LogOutput: it maps lines such as
// "2026/01/02 15:04:05 [WARN] memberlist: Refuting a suspect message" onto
// zerolog levels, with component=memberlist, and counts them by level.
// Lines that report a refused packet or stream (memberlistReject) are counted
// by reason in rejected, when set, and summed up into one warning per
// rejectSummaryInterval instead of one line each.
type logWriter struct {
	log      zerolog.Logger
	lines    *prometheus.CounterVec
	rejected *prometheus.CounterVec // by reason; nil counts nothing

	sumOnce sync.Once
	sum     *logx.Summarizer
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
	if level > zerolog.DebugLevel {
		if reason := memberlistReject(text); reason != "" {
			if w.rejected != nil {
				w.rejected.WithLabelValues(reason).Inc()
			}
			w.summarizer().Add(reason, text)
			return
		}
	}
	if e := w.log.WithLevel(level); e.Enabled() {
		msg := "memberlist"
		if m, fields := memberlistWords(text); m != "" {
			msg = m
			for i := 0; i+1 < len(fields); i += 2 {
				e.Str(fields[i], fields[i+1])
			}
		}
		e.Str("line", text).Msg(msg)
	}
}

// memberlistLines maps the lines of memberlist v0.7.0 an operator meets
// in a healthy or a failing mesh to meshlb's words: a constant message
// and the line's variables as fields (the line itself stays in "line").
var memberlistLines = []struct {
	re     *regexp.Regexp
	msg    string
	fields []string // names of re's groups, in order
}{
	{regexp.MustCompile(`^Suspect (\S+) has failed, no acks received$`), "peer suspected: no answer to probes", []string{"peer"}},
	{regexp.MustCompile(`^Marking (\S+) as failed, suspect timeout reached \((\d+) peer confirmations\)$`), "peer failed: suspicion not refuted in time", []string{"peer", "confirmations"}},
	{regexp.MustCompile(`^Was able to connect to (\S+) over TCP but UDP probes failed, network may be misconfigured$`), "peer answers over tcp only: udp to its gossip port is blocked or lost", []string{"peer"}},
	{regexp.MustCompile(`^Failed fallback TCP ping: (.*)$`), "peer probe over tcp failed too", []string{"error"}},
	{regexp.MustCompile(`^Refuting a suspect message \(from: (\S+)\)$`), "refuting a suspicion of this node: it was slow to answer probes", []string{"from"}},
	{regexp.MustCompile(`^Refuting a dead message \(from: (\S+)\)$`), "refuting a report of this node's death", []string{"from"}},
	{regexp.MustCompile(`^Push/Pull with (\S+) failed: (.*)$`), "state sync with peer failed", []string{"peer", "error"}},
	{regexp.MustCompile(`^Failed to send gossip to (\S+): (.*)$`), "gossip send failed", []string{"peer", "error"}},
	{regexp.MustCompile(`^Conflicting address for (\S+)\. Mine: (\S+) Theirs: (\S+) Old state: (\S+)$`), "another node claims this name: node names must be unique", []string{"name", "ours", "theirs", "state"}},
	{regexp.MustCompile(`^Got ping for unexpected node '?([^' ]*)'?(?: from=(\S+))?$`), "probe for another node name reached this address: a peer has a stale address", []string{"name", "from"}},
	{regexp.MustCompile(`^Updating address for left or failed node (\S+) from (\S+) to (\S+)$`), "peer came back at a new address", []string{"peer", "old", "new"}},
	{regexp.MustCompile(`^Remote node state size is \((\d+)\) limit is \((\d+)\)$`), "peer state too large to sync", []string{"size", "limit"}},
	{regexp.MustCompile(`^Too many pending push/pull requests$`), "state syncs refused: too many at once", nil},
	{regexp.MustCompile(`^Binding to public address without encryption!$`), "gossip on a public address without encryption: set --gossip-key", nil},
}

// memberlistWords returns the message and fields of a known line, or "".
func memberlistWords(text string) (string, []string) {
	for _, l := range memberlistLines {
		m := l.re.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		var fields []string
		for i, name := range l.fields {
			if i+1 < len(m) && m[i+1] != "" {
				fields = append(fields, name, m[i+1])
			}
		}
		return l.msg, fields
	}
	return "", nil
}

func (w *logWriter) summarizer() *logx.Summarizer {
	w.sumOnce.Do(func() {
		w.sum = logx.New(rejectSummaryInterval, func(s logx.Summary) {
			e := w.log.Warn().Int64("count", s.Count).Str("last_reason", s.Reason).Str("last_line", s.Detail)
			if len(s.Reasons) > 0 {
				d := zerolog.Dict()
				for r, n := range s.Reasons {
					d.Int64(r, n)
				}
				e.Dict("reasons", d)
			}
			e.Dur("interval", rejectSummaryInterval).Msg("gossip packets rejected")
		})
	})
	return w.sum
}

// stop reports rejections still pending and stops the summary timer;
// later ones are logged one by one. Shutdown calls it after memberlist
// has stopped.
func (w *logWriter) stop() { w.summarizer().Stop() }

// memberlistReject classifies a memberlist line (level and "memberlist: "
// removed) that reports a packet or stream it refused, the lines an
// outsider can make it write at will, into a small bounded set; it
// returns "" for every other line. The texts are memberlist v0.7.0's.
func memberlistReject(text string) string {
	t := strings.ToLower(text)
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(t, s) {
				return true
			}
		}
		return false
	}
	switch {
	case has("decrypt"):
		// "Decrypt packet failed: ...", and a stream's "no installed keys
		// could decrypt the message".
		return "decrypt"
	case has("invalid checksum"):
		return "checksum"
	case has("label"):
		// "discarding packet with unacceptable label", "cannot decode
		// label", "double packet label header".
		return "label"
	case has("packet too short", "missing message type byte"):
		return "truncated"
	case has("msg type (", "message type (", "invalid msgtype", "unknown message type"):
		return "unknown_type"
	case has("failed to decode", "failed to decompress", "truncated messages"):
		return "malformed"
	case has("handler queue full"):
		return "queue_full"
	case strings.HasPrefix(t, "failed to receive:"), has("failed to receive user message", "failed to read remote state"):
		return "stream"
	}
	return ""
}
