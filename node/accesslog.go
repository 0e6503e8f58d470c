package node

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/meshlb/meshlb/router"
)

// The access log: one JSON line per plain HTTP request and one per
// WebSocket session at its end, apart from the node's own log (HAProxy's
// and Envoy's habit). The router's hooks hand each record over a bounded
// channel, without blocking; one goroutine encodes and writes through a
// buffered writer, flushed when the channel runs dry and at least every
// accessFlushInterval. A full channel drops the record and counts it
// (AccessLogDropped): the relay never waits for a disk.
//
// Fields (stable; new ones may be added, none renamed):
//
//	type         "http" or "ws"
//	start        when the request or handshake arrived, RFC 3339, ms
//	duration_ms  until the answer's end, or the session's end
//	node         this node's name
//	remote_addr  the peer's address (after PROXY protocol)
//	client_ip    the client as keyed: a trusted proxy's X-Forwarded-For or Forwarded applied
//	path         the path, without the query (which may hold the key)
//	key_source   the key's source as configured (query:session_id, cookie:NAME,
//	             header:NAME, protocol:PREFIX, ip), or issued (a new session cookie)
//	key_hash     xxhash64 of the routing key, hex: the same key gives the same hash on every node
//	key          the raw key, only with --access-log-keys
//	backend      the backend that answered ("" for none)
//	bytes_in     client → backend (a request's body)
//	bytes_out    backend → client (a response's body)
//	failovers    candidates that failed before backend answered
//	method, status              (http)
//	upgrade      (http) true for a WebSocket upgrade that did not become
//	             a session: refused, or answered without a 101
//	close_code, closed_by       (ws) the code the client got (1005: a close
//	                            frame without one, 1006: no close frame);
//	                            client, backend or node: who sent the first
//	                            close frame, or hung up first without one
type accessLog struct {
	path string // "stdout" or a file
	keys bool
	ch   chan accessRecord
	stop chan struct{}
	hup  chan struct{}
	done chan struct{}
	// dropped counts records lost to a full channel.
	dropped atomic.Int64
	written atomic.Int64

	once sync.Once
	out  io.Writer
	f    *os.File // nil for stdout
	err  func(error)
}

// accessQueue is how many records may wait for the writer: a burst of
// session ends (a drain closes thousands at once) fits.
const accessQueue = 16 << 10

// accessFlushInterval bounds how long a line waits in the buffer.
const accessFlushInterval = time.Second

// accessRecord is one line; the JSON names are the documented fields.
type accessRecord struct {
	Type       string  `json:"type"`
	Start      string  `json:"start"`
	DurationMS float64 `json:"duration_ms"`
	Node       string  `json:"node"`
	RemoteAddr string  `json:"remote_addr"`
	ClientIP   string  `json:"client_ip"`
	Method     string  `json:"method,omitempty"`
	Path       string  `json:"path"`
	Status     int     `json:"status,omitempty"`
	Upgrade    bool    `json:"upgrade,omitempty"`
	KeySource  string  `json:"key_source"`
	KeyHash    string  `json:"key_hash"`
	Key        string  `json:"key,omitempty"`
	Pool       string  `json:"pool,omitempty"`
	Backend    string  `json:"backend"`
	BytesIn    int64   `json:"bytes_in"`
	BytesOut   int64   `json:"bytes_out"`
	CloseCode  uint16  `json:"close_code,omitempty"`
	ClosedBy   string  `json:"closed_by,omitempty"`
	Failovers  int     `json:"failovers"`
}

// openAccessLog opens the log at path: "stdout" or a file, appended to
// (created 0640). onErr hears write and reopen errors (logged by the node,
// rate-limited by their rarity: one per failed flush).
func openAccessLog(path string, keys bool, onErr func(error)) (*accessLog, error) {
	l := &accessLog{path: path, keys: keys, ch: make(chan accessRecord, accessQueue),
		stop: make(chan struct{}), hup: make(chan struct{}, 1), done: make(chan struct{}), err: onErr}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *accessLog) open() error {
	if l.path == "stdout" {
		l.out = os.Stdout
		return nil
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("access log: %w", err)
	}
	l.f, l.out = f, f
	return nil
}

func keyHash(key string) string {
	var b [8]byte
	h := xxhash.Sum64String(key)
	for i := range b {
		b[i] = byte(h >> (56 - 8*i))
	}
	return hex.EncodeToString(b[:])
}

func msTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

func (l *accessLog) enqueue(r accessRecord) {
	select {
	case l.ch <- r:
	default:
		l.dropped.Add(1)
	}
}

func (l *accessLog) session(node string, s *router.SessionEnd) {
	r := accessRecord{Type: "ws", Start: msTime(s.Start), DurationMS: ms(s.Duration), Node: node,
		RemoteAddr: s.RemoteAddr, ClientIP: s.ClientIP, Path: s.Path, KeySource: s.KeySource, KeyHash: keyHash(s.Key),
		Pool: s.Pool, Backend: s.Backend, BytesIn: s.BytesIn, BytesOut: s.BytesOut, CloseCode: s.CloseCode, ClosedBy: s.ClosedBy,
		Failovers: s.Failovers}
	if l.keys {
		r.Key = s.Key
	}
	l.enqueue(r)
}

func (l *accessLog) request(node string, q *router.RequestEnd) {
	r := accessRecord{Type: "http", Start: msTime(q.Start), DurationMS: ms(q.Duration), Node: node,
		RemoteAddr: q.RemoteAddr, ClientIP: q.ClientIP, Method: q.Method, Path: q.Path, Status: q.Status, Upgrade: q.Upgrade,
		KeySource: q.KeySource, Pool: q.Pool, Backend: q.Backend, BytesIn: q.BytesIn, BytesOut: q.BytesOut, Failovers: q.Failovers}
	if q.Key != "" {
		r.KeyHash = keyHash(q.Key)
	}
	if l.keys {
		r.Key = q.Key
	}
	l.enqueue(r)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Reopen asks the writer to close and reopen the file, for logrotate
// (SIGHUP). It never blocks.
func (l *accessLog) Reopen() {
	select {
	case l.hup <- struct{}{}:
	default:
	}
}

// run writes records until close. It is the log's one goroutine.
func (l *accessLog) run() {
	defer close(l.done)
	bw := bufio.NewWriterSize(l.out, 64<<10)
	enc := json.NewEncoder(bw)
	tick := time.NewTicker(accessFlushInterval)
	defer tick.Stop()
	flush := func() {
		if err := bw.Flush(); err != nil {
			l.err(fmt.Errorf("access log write: %w", err))
			bw.Reset(l.out) // what was buffered is lost; the next lines try again
		}
	}
	write := func(r accessRecord) {
		if err := enc.Encode(r); err == nil {
			l.written.Add(1)
		}
	}
	for {
		select {
		case r := <-l.ch:
			write(r)
			// Take what else waits before one flush, so a burst costs few
			// writes.
			for more := true; more; {
				select {
				case r := <-l.ch:
					write(r)
				default:
					more = false
				}
			}
			if bw.Buffered() > 32<<10 {
				flush()
			}
		case <-tick.C:
			flush()
		case <-l.hup:
			flush()
			if l.f != nil {
				old := l.f
				if err := l.open(); err != nil {
					l.err(err) // keep writing to the old file
				} else {
					old.Close()
					bw.Reset(l.out)
				}
			}
		case <-l.stop:
			for more := true; more; {
				select {
				case r := <-l.ch:
					write(r)
				default:
					more = false
				}
			}
			flush()
			if l.f != nil {
				if err := l.f.Close(); err != nil {
					l.err(fmt.Errorf("access log close: %w", err))
				}
			}
			return
		}
	}
}

// close writes what is queued, closes the file and waits for the writer.
// Records enqueued after it are dropped. It is safe to call twice.
func (l *accessLog) close() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// Written and Dropped count access-log records written and lost to a
// full queue.
func (l *accessLog) Written() int64 { return l.written.Load() }
func (l *accessLog) Dropped() int64 { return l.dropped.Load() }

// ReopenAccessLog reopens the access log file (for logrotate, on SIGHUP).
// It is a no-op when the access log is off or on stdout.
func (n *Node) ReopenAccessLog() {
	if n.obs != nil && n.obs.access != nil {
		n.obs.access.Reopen()
	}
}
