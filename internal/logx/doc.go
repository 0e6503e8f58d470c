// Package logx holds the few log helpers every package shares, so each
// exists once: a Limiter (one line per period, the rest counted), a
// Summarizer (a flood of like events as one line per interval) and
// StdLogger (the standard library's *log.Logger, as net/http and
// memberlist want one, writing to zerolog).
package logx
