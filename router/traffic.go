package router

import (
	"cmp"
	"encoding/binary"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// What the router tells its observers (metrics, the access log). Nothing
// here runs per frame: the relay counts bytes in the session's own
// atomics (wsConn.bytesIn/bytesOut), and everything else is noted at most
// once per session, per close frame or per request.

// Handshake results passed to Config.OnHandshake.
const (
	HandshakeOK       = "ok"       // the backend's 101 went to the client
	HandshakeRejected = "rejected" // the backend answered, not 101; passed on as it was
	HandshakeError    = "error"    // no backend answered usefully: 502, 503 or 504
)

// Closers: who ended a WebSocket session. The side that sent the first
// close frame; without one, the side whose connection ended first.
const (
	ClosedByClient  = "client"
	ClosedByBackend = "backend"
	ClosedByNode    = "node"
)

// Close codes reported where no close code went to the client (RFC 6455
// 7.1.5, 7.4.1: reserved for reporting, never sent).
const (
	CloseNoStatus = 1005 // a close frame without a code
	CloseAbnormal = 1006 // no close frame at all
)

// SessionEnd describes one WebSocket session, relayed after a 101, at its
// end.
type SessionEnd struct {
	Start    time.Time     // the client's handshake arrived
	Duration time.Duration // from Start to the session's end
	// RemoteAddr is the peer's address (after PROXY protocol); ClientIP
	// the client as the key extractor sees it (a trusted proxy's
	// X-Forwarded-For or Forwarded taken into account).
	RemoteAddr string
	ClientIP   string
	Path       string // without the query: it may hold the key
	KeySource  string // as KeyExtractor.Key names it (query:session_id, ip, ...), or issued (a new session cookie)
	Key        string // the raw routing key: the observer decides whether it is shown
	Pool       string // the pool the routes chose
	Backend    string
	// BytesIn went client → backend, BytesOut backend → client.
	BytesIn, BytesOut int64
	// CloseCode is the code of the close frame the client got (the
	// backend's, or the node's own), CloseNoStatus for one without a
	// code, CloseAbnormal when none went.
	CloseCode uint16
	ClosedBy  string
	Failovers int // candidates that failed before Backend answered
}

// RequestEnd describes one plain HTTP request at its end.
type RequestEnd struct {
	Start      time.Time
	Duration   time.Duration
	RemoteAddr string
	ClientIP   string
	Method     string
	Path       string // without the query
	KeySource  string
	Key        string
	Pool       string // the pool the routes chose
	Backend    string // "" when none was reached
	Status     int
	// Upgrade marks a WebSocket upgrade that did not become a session:
	// refused (400, 503, ...) or answered by the backend with no 101.
	Upgrade bool
	// BytesIn is the request body read, BytesOut the response body
	// written.
	BytesIn, BytesOut int64
	Failovers         int
}

// BackendTraffic is what the router has carried for one backend.
type BackendTraffic struct {
	Backend string
	// Sessions is the number of WebSockets open to it now.
	Sessions int64
	// BytesIn (client → backend) and BytesOut (backend → client), of
	// WebSockets and HTTP requests; see Router.Traffic for when.
	BytesIn, BytesOut int64
	// Failovers counts requests and handshakes that left it for the next
	// candidate.
	Failovers int64
}

// backendTraffic is one backend's counters. The map that holds them
// (Router.traffic) keeps one per backend ID ever routed to: a few dozen
// bytes each, bounded by the catalog's history, not by clients.
type backendTraffic struct {
	sessions          atomic.Int64 // registered WebSockets; changed under Router.mu
	bytesIn, bytesOut atomic.Int64 // of ended sessions (added under Router.mu) and HTTP requests
	failovers         atomic.Int64
}

// trafficOf returns id's counters, creating them the first time.
func (rt *Router) trafficOf(id string) *backendTraffic {
	if t, ok := rt.traffic.Load(id); ok {
		return t.(*backendTraffic)
	}
	t, _ := rt.traffic.LoadOrStore(id, new(backendTraffic))
	return t.(*backendTraffic)
}

// Traffic returns the counters of every backend routed to, sorted by ID.
// With live set it adds the bytes of the sessions still open, walking
// them under the registry lock (a scrape's cost, not a summary's);
// without it bytes count when a session ends. Either way the figures
// never go down.
func (rt *Router) Traffic(live bool) []BackendTraffic {
	var out []BackendTraffic
	idx := map[string]int{}
	rt.mu.Lock()
	rt.traffic.Range(func(k, v any) bool {
		t := v.(*backendTraffic)
		idx[k.(string)] = len(out)
		out = append(out, BackendTraffic{Backend: k.(string), Sessions: t.sessions.Load(),
			BytesIn: t.bytesIn.Load(), BytesOut: t.bytesOut.Load(), Failovers: t.failovers.Load()})
		return true
	})
	if live {
		for _, c := range rt.conns {
			if i, ok := idx[c.backendID]; ok {
				out[i].BytesIn += c.bytesIn.Load()
				out[i].BytesOut += c.bytesOut.Load()
			}
		}
	}
	rt.mu.Unlock()
	slices.SortFunc(out, func(a, b BackendTraffic) int { return cmp.Compare(a.Backend, b.Backend) })
	return out
}

// sessionObs is what a session's end reports, gathered at its handshake.
// It is written before the session is registered and read once at its
// end, so it needs no lock.
type sessionObs struct {
	start      time.Time
	remoteAddr string
	clientIP   string
	path       string
	keySource  string
	key        string
	pool       string
	failovers  int
	relayed    bool // the 101 reached the client: a session, not a failed handshake
}

// Closers as stored in wsConn.closedBy.
const (
	closerNone uint32 = iota
	closerClient
	closerBackend
	closerNode
)

var closerNames = [...]string{"", ClosedByClient, ClosedByBackend, ClosedByNode}

// noteClose records a close frame: from whom, and, for one that goes to
// the client (code non-zero), its code. The first of each wins; it runs
// once or twice per session, never per frame.
func (c *wsConn) noteClose(by uint32, code uint16) {
	c.closedBy.CompareAndSwap(closerNone, by)
	if code != 0 {
		c.closeCode.CompareAndSwap(0, uint32(code))
	}
}

// noteEnd records the end of one direction's connection for a session
// that saw no close frame: the side that hung up first closed it.
func (c *wsConn) noteEnd(up bool) {
	if up {
		c.closedBy.CompareAndSwap(closerNone, closerClient)
	} else {
		c.closedBy.CompareAndSwap(closerNone, closerBackend)
	}
}

// noteClientClose records a close frame seen in the client's stream, once.
func (c *wsConn) noteClientClose() {
	if c.upFrames.closed && !c.clientClosed {
		c.clientClosed = true
		c.noteClose(closerClient, 0)
	}
}

// closeFrameCode reads the code of a close frame's payload; masked is
// the frame's mask key, if it has one (a backend should send none).
func closeFrameCode(payload []byte, mask *[4]byte) uint16 {
	if len(payload) < 2 {
		return CloseNoStatus
	}
	b := [2]byte{payload[0], payload[1]}
	if mask != nil {
		b[0] ^= mask[0]
		b[1] ^= mask[1]
	}
	return binary.BigEndian.Uint16(b[:])
}

// ended updates the counters of a session leaving the registry; the
// caller holds rt.mu, so Traffic sees its bytes in one place or the other.
func (c *wsConn) endedLocked() {
	t := c.rt.trafficOf(c.backendID)
	t.sessions.Add(-1)
	t.bytesIn.Add(c.bytesIn.Load())
	t.bytesOut.Add(c.bytesOut.Load())
}

// reportEnd tells Config.OnSessionEnd about a session that was relayed.
func (c *wsConn) reportEnd() {
	f := c.rt.cfg.OnSessionEnd
	if f == nil || !c.obs.relayed {
		return
	}
	code := uint16(c.closeCode.Load())
	if code == 0 {
		code = CloseAbnormal
	}
	f(&SessionEnd{
		Start: c.obs.start, Duration: time.Since(c.obs.start),
		RemoteAddr: c.obs.remoteAddr, ClientIP: c.obs.clientIP, Path: c.obs.path,
		KeySource: c.obs.keySource, Key: c.obs.key, Pool: c.obs.pool, Backend: c.backendID,
		BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(),
		CloseCode: code, ClosedBy: closerNames[c.closedBy.Load()], Failovers: c.obs.failovers,
	})
}

// handshakeReport reports one handshake to Config.OnHandshake, once.
type handshakeReport struct {
	rt       *Router
	start    time.Time
	reported bool
}

func (h *handshakeReport) done(backend, result string) {
	if h.reported {
		return
	}
	h.reported = true
	if f := h.rt.cfg.OnHandshake; f != nil {
		f(backend, result, time.Since(h.start))
	}
}

// countFailover counts a failover away from b.
func (rt *Router) countFailover(b Backend) { rt.trafficOf(b.ID).failovers.Add(1) }

// requestRecorder sees the status and the body bytes of an HTTP answer,
// for Config.OnRequestEnd.
type requestRecorder struct {
	http.ResponseWriter
	status   int
	written  int64
	switched bool // a WebSocket upgrade that became a session
}

func (w *requestRecorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *requestRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *requestRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request body bytes read.
type countingBody struct {
	rc interface {
		Read([]byte) (int, error)
		Close() error
	}
	n atomic.Int64 // read by the transport's goroutine
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// requestObs gathers a request's RequestEnd while ServeHTTP runs.
type requestObs struct {
	end  RequestEnd
	rec  *requestRecorder
	body *countingBody
}

// startRequest prepares the report of a plain HTTP request, or returns
// nil when nobody listens.
func (rt *Router) startRequest(w http.ResponseWriter, req *http.Request) (*requestObs, http.ResponseWriter, *http.Request) {
	if rt.cfg.OnRequestEnd == nil {
		return nil, w, req
	}
	o := &requestObs{rec: &requestRecorder{ResponseWriter: w}}
	o.end = RequestEnd{Start: time.Now(), RemoteAddr: req.RemoteAddr, Method: req.Method, Path: req.URL.Path,
		Upgrade: IsWebSocketUpgrade(req)}
	if req.Body != nil && req.Body != http.NoBody {
		o.body = &countingBody{rc: req.Body}
		req.Body = o.body
	}
	return o, o.rec, req
}

// finishRequest reports the request; st is its route, if it got one.
func (rt *Router) finishRequest(o *requestObs, req *http.Request, st *route) {
	if o.rec.switched {
		return
	}
	o.end.Duration = time.Since(o.end.Start)
	o.end.Status = cmp.Or(o.rec.status, http.StatusOK)
	o.end.BytesOut = o.rec.written
	if o.body != nil {
		o.end.BytesIn = o.body.n.Load()
	}
	if a := rt.keys.ClientIP(req); a.IsValid() {
		o.end.ClientIP = a.String()
	}
	if st != nil {
		o.end.Failovers = int(st.failovers.Load())
		if b := st.served.Load(); b != nil {
			o.end.Backend = b.ID
			t := rt.trafficOf(b.ID)
			t.bytesIn.Add(o.end.BytesIn)
			t.bytesOut.Add(o.end.BytesOut)
		}
	}
	rt.cfg.OnRequestEnd(&o.end)
}

// CloseCodeLabel turns a close code into a metric label with a bounded
// set of values: the registered codes 1000-1015 as they are, and the
// ranges a peer may pick from freely (3000-3999 registered for libraries,
// 4000-4999 private) as "3xxx" and "4xxx"; anything else is "other".
func CloseCodeLabel(code uint16) string {
	switch {
	case code >= 1000 && code <= 1015:
		return closeCodeLabels[code-1000]
	case code >= 3000 && code <= 3999:
		return "3xxx"
	case code >= 4000 && code <= 4999:
		return "4xxx"
	}
	return "other"
}

var closeCodeLabels = func() (l [16]string) {
	for i := range l {
		l[i] = strconv.Itoa(1000 + i)
	}
	return l
}()

// trafficMap is the type of Router.traffic: backend ID → *backendTraffic.
type trafficMap = sync.Map
