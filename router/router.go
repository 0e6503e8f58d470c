package router

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/logx"
)

// Backend is one upstream server.
type Backend struct {
	ID   string
	Addr string // host:port, dialled over TCP
}

// Picker chooses backends of a pool for a key: the owner first, then
// failover candidates, at most n in all. It must be safe for concurrent
// use and fast: it is called once per request. node adapts its rings to
// it, one a pool.
type Picker interface {
	Pick(pool string, key []byte, n int) ([]Backend, error)
}

// PickerFunc adapts a function to Picker, as http.HandlerFunc does.
type PickerFunc func(pool string, key []byte, n int) ([]Backend, error)

// Pick calls f(pool, key, n).
func (f PickerFunc) Pick(pool string, key []byte, n int) ([]Backend, error) { return f(pool, key, n) }

// ErrNoBackends is what a Picker returns when it has nothing to offer; the
// router answers 503.
var ErrNoBackends = errors.New("no backends")

// UnavailableError is what a Picker returns when the node must not route
// at all (its config differs from the mesh's): the router answers 503 with
// Reason as the body's error.
type UnavailableError struct{ Reason string }

func (e *UnavailableError) Error() string { return e.Reason }

// Errors the router answers with itself; statusError maps them.
var (
	errNoKey        = errors.New("no routing key")
	errTooManyConns = errors.New("too many connections")
	errDraining     = errors.New("draining")
	errBadUpgrade   = errors.New("bad websocket upgrade request")
	errHijack       = errors.New("connection cannot be hijacked")
	errBadSwitch    = errors.New("backend's 101 does not complete the websocket handshake")
)

// dialError marks a failure to connect to a backend: nothing was sent, so
// another candidate may be tried (caddy's DialError).
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial backend: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// clientGoneError wraps an error caused by the client going away.
type clientGoneError struct{ err error }

func (e *clientGoneError) Error() string { return "client gone: " + e.err.Error() }
func (e *clientGoneError) Unwrap() error { return e.err }

// Defaults for Config fields left at zero.
const (
	DefaultRetries               = 2
	DefaultSessionCookieMaxAge   = 24 * time.Hour
	DefaultDialTimeout           = 3 * time.Second
	DefaultHandshakeTimeout      = 10 * time.Second
	DefaultResponseHeaderTimeout = 60 * time.Second
	DefaultWSWriteTimeout        = 30 * time.Second
	DefaultWSMaxFrameSize        = 64 << 20
	DefaultHTTPWriteTimeout      = 60 * time.Second
)

// Config configures a Router. Zero values mean the documented default.
type Config struct {
	// Picker chooses backends for a routing key. Required.
	Picker Picker
	// Key configures routing-key extraction. Key.SessionCookie defaults to
	// SessionCookie so that an issued cookie is read back.
	Key KeyConfig
	// Retries is the number of extra candidates tried when the owner
	// refuses the connection or fails before the WebSocket handshake
	// completes. Default 2; negative means 0.
	Retries int
	// SessionCookie, if set, names a cookie issued to a request that has
	// no routing key other than the client IP: a random 128-bit session
	// ID (hex), HttpOnly, SameSite=Lax, Path=/, Secure when the request
	// came over TLS (or a trusted proxy says X-Forwarded-Proto: https).
	// The request is routed by that ID, so reconnects from a new IP stick.
	SessionCookie string
	// SessionCookieMaxAge is the cookie's Max-Age. Default 24h; negative
	// issues a browser-session cookie (no Max-Age).
	SessionCookieMaxAge time.Duration
	// DialTimeout bounds a TCP connect to a backend. Default 3s.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the whole WebSocket handshake with the
	// backends, failover included; expiry answers 504. Default 10s.
	HandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for an HTTP backend's response
	// headers; expiry answers 504. Default 60s.
	ResponseHeaderTimeout time.Duration
	// MaxConns caps concurrent proxied requests plus WebSockets; the
	// overflow gets 503. 0 means unlimited.
	MaxConns int
	// MaxConnsPerIP caps the concurrent proxied requests plus WebSockets
	// of one client address (limits.go); HandshakeRatePerIP caps its new
	// WebSockets a second, with a burst of HandshakeBurstPerIP (default:
	// the rate, at least 1). The overflow gets 429 with Retry-After.
	// MaxTrackedIPs bounds the addresses held (DefaultMaxTrackedIPs).
	// Zero means no limit.
	MaxConnsPerIP       int
	HandshakeRatePerIP  float64
	HandshakeBurstPerIP int
	MaxTrackedIPs       int
	// WSIdleTimeout, if positive, closes a WebSocket with 1001 when no
	// byte has been read from either side for that long. The router's own
	// pings are not activity, but the client's pongs are: with
	// WSPingInterval < WSIdleTimeout the idle timeout detects dead clients
	// rather than quiet sessions.
	WSIdleTimeout time.Duration
	// WSPingInterval, if positive, sends a ping to the client at this
	// interval. The client's pong travels on to the backend, which ignores
	// it (RFC 6455 5.5.3: an unsolicited pong needs no answer).
	WSPingInterval time.Duration
	// WSWriteTimeout closes a WebSocket whose client or backend takes no
	// byte of what the router holds for it for this long: it has stopped
	// reading. A live client is told with 1008 (Policy Violation) when it
	// is its backend that stalled. Default 30s.
	WSWriteTimeout time.Duration
	// WSMaxFrameSize is the largest payload a client frame may declare;
	// a larger one closes the WebSocket with 1009 (Message Too Big). It
	// bounds nothing the router holds (frames pass through), but spares
	// the backends. Default 64 MiB.
	WSMaxFrameSize int64
	// HTTPWriteTimeout closes an HTTP response whose client takes no part
	// of it for this long. It is a bound on progress, not on the whole
	// response: it starts again with each write of up to httpWriteChunk
	// bytes the client takes. Default 60s.
	HTTPWriteTimeout time.Duration
	// BackendTLS, if set, speaks TLS to every backend with this client
	// config (roots, client certificate for mTLS, ServerName; an empty
	// ServerName takes each backend's host). Verification follows it:
	// InsecureSkipVerify is the caller's choice, to be logged.
	BackendTLS *tls.Config
	// DialGuard, if set, is asked before every connect to a backend, with
	// the address about to be dialled (after name resolution). An error
	// refuses the connect: the next candidate is tried, 502 if none, and a
	// rate-limited warning names the backend; OnFailure is not called, as
	// the backend is not at fault. It is called on the request path and
	// must be fast. node uses it to refuse its own listeners and addresses
	// outside its backend networks.
	DialGuard func(netip.AddrPort) error
	// OnFailure, if set, observes each backend that refused or failed
	// before answering. It is called on the request path and must not
	// block.
	OnFailure func(b Backend, err error)
	// OnHandshake, OnSessionEnd and OnRequestEnd, if set, observe each
	// WebSocket handshake (its backend, "" when none answered, its result
	// and how long it took), each relayed WebSocket session at its end,
	// and each other request at its end (plain HTTP, and upgrades that
	// did not become sessions, marked Upgrade): metrics and the access log.
	// They run on the request path, and a session's end may run on an
	// epoll loop, so they must be quick and must not block. The value
	// passed is the callee's to keep.
	OnHandshake  func(backend, result string, d time.Duration)
	OnSessionEnd func(*SessionEnd)
	OnRequestEnd func(*RequestEnd)
	// OnProxyError, if set, observes each 502, 503 or 504 the router
	// answers itself, with the reason the client reads (a short constant
	// string, fit for a metric label). It runs on the request path and
	// must not block.
	OnProxyError func(status int, reason string)
	// Logger receives debug lines per connection and rate-limited warnings
	// for failovers and overflows. Default: zerolog.Nop().
	Logger zerolog.Logger

	// Affinity, when set, pins clients with a signed cookie (affinity.go).
	Affinity *Affinity

	// Routes send requests by host and path to pools (routes.go); a
	// request none matches goes to DefaultPool. Empty: every request goes
	// to DefaultPool. SetRoutes replaces them and PoolKeySources.
	Routes []Route
	// PoolKeySources, by pool, replaces Key.Sources for the requests of
	// that pool (a ride's ID for one, a chat room for another); the rest
	// of Key (trusted proxies, IPv6 prefix, session cookie) is shared.
	PoolKeySources map[string]string
}

// Router is an http.Handler that routes each request by its key to a
// backend and proxies HTTP and WebSocket traffic. Its methods are safe for
// concurrent use.
type Router struct {
	cfg       Config
	keys      *KeyExtractor
	routes    atomic.Pointer[routeTable]
	tun       atomic.Pointer[Tunables]
	log       zerolog.Logger
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	dial      *net.Dialer // every connect to a backend; safe for concurrent use
	btls      *backendTLS // nil: plain TCP to backends (backendtls.go)

	// closeTimeout bounds waiting for a WebSocket close handshake or for
	// the second direction after the first one ended.
	closeTimeout time.Duration

	active atomic.Int64 // proxied requests + WebSockets, for MaxConns
	limits *ipLimiter   // per-client limits; nil without any (limits.go)
	// traffic holds each backend's counters (traffic.go).
	traffic trafficMap
	// wsWriteTimeouts and clientFrameErrors count WebSockets closed for
	// the write timeout and for a refused client frame.
	wsWriteTimeouts   atomic.Int64
	affinityRejected  atomic.Int64 // affinity.go
	affinityGone      atomic.Int64
	clientFrameErrors atomic.Int64
	// dialHookForTest, if set, runs in the backend dialer's Control
	// before the guard; tests shrink socket buffers with it.
	dialHookForTest func(network, address string, c syscall.RawConn) error
	overflowLog     logx.Limiter
	failoverLog     logx.Limiter
	refusedLog      logx.Limiter

	limitLog logx.Limiter // refusals of the per-client limits
	// proxyErrLog limits the warning for each 502/503/504 we answer: a
	// dead backend under load would otherwise write a line per request.
	proxyErrLog logx.Limiter

	mu       sync.Mutex // guards the fields below
	conns    map[uint64]*wsConn
	nextID   uint64
	draining bool
	closed   bool
	wg       sync.WaitGroup // one per registered WebSocket session
	// polls are the epoll relay's loops, started with the first WebSocket
	// that can use them; pollFailed records that they could not be.
	polls      []*poller
	pollFailed bool
	nextPoll   atomic.Uint32 // round robin over polls
}

// New validates cfg and builds a Router. It starts no goroutines.
func New(cfg Config) (*Router, error) {
	if cfg.Picker == nil {
		return nil, errors.New("router config: nil picker")
	}
	if cfg.ResponseHeaderTimeout < 0 {
		return nil, fmt.Errorf("router config: negative response header timeout %v", cfg.ResponseHeaderTimeout)
	}
	tun, err := cfg.Tunables().withDefaults()
	if err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	if cfg.MaxConnsPerIP < 0 || cfg.HandshakeBurstPerIP < 0 || cfg.MaxTrackedIPs < 0 ||
		!(cfg.HandshakeRatePerIP >= 0) || math.IsInf(cfg.HandshakeRatePerIP, 0) {
		return nil, errors.New("router config: per-client limits must be finite and >= 0")
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	if cfg.SessionCookieMaxAge == 0 {
		cfg.SessionCookieMaxAge = DefaultSessionCookieMaxAge
	}
	if cfg.ResponseHeaderTimeout == 0 {
		cfg.ResponseHeaderTimeout = DefaultResponseHeaderTimeout
	}
	tun.apply(&cfg) // so that cfg shows what is in force at start
	if cfg.SessionCookie != "" {
		if err := (&http.Cookie{Name: cfg.SessionCookie, Value: "x"}).Valid(); err != nil {
			return nil, fmt.Errorf("router config: session cookie: %w", err)
		}
		if cfg.Key.SessionCookie == "" {
			cfg.Key.SessionCookie = cfg.SessionCookie
		}
	}
	cfg.Key.TrustedProxies = append([]netip.Prefix(nil), cfg.Key.TrustedProxies...)
	keys, err := NewKeyExtractor(cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}

	rt := &Router{
		cfg:          cfg,
		keys:         keys,
		log:          cfg.Logger.With().Str("component", "router").Logger(),
		closeTimeout: 5 * time.Second,
		conns:        make(map[uint64]*wsConn),
		limits:       newIPLimiter(cfg.MaxConnsPerIP, cfg.HandshakeRatePerIP, cfg.HandshakeBurstPerIP, cfg.MaxTrackedIPs),
	}
	routes, err := newRouteTable(cfg.Routes, cfg.Key, cfg.PoolKeySources)
	if err != nil {
		return nil, fmt.Errorf("router config: %w", err)
	}
	rt.routes.Store(routes)
	rt.tun.Store(&tun)
	rt.dial = rt.dialer()
	rt.btls = newBackendTLS(cfg.BackendTLS)
	dialer := rt.dial
	rt.transport = &http.Transport{
		Proxy: nil, // never the environment's proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, rt.tunables().DialTimeout)
			defer cancel()
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return c, nil
		},
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64, // many clients share few backends
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
	}
	if rt.btls != nil {
		// The transport does TLS on the dialled connection for https
		// URLs (rewrite sets the scheme); its ServerName comes from the
		// URL's host unless one is configured.
		rt.transport.TLSClientConfig = rt.btls.base
	}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite:        rt.rewrite,
		Transport:      &failoverTransport{rt: rt},
		ModifyResponse: rt.modifyResponse,
		ErrorHandler:   rt.writeError,
		ErrorLog:       logx.StdLogger(rt.log, zerolog.DebugLevel, "reverse proxy"),
	}
	return rt, nil
}

// ServeHTTP routes req by its key and proxies it, as a WebSocket when it
// asks for an upgrade to websocket, as plain HTTP otherwise.
func (rt *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// A request is reported at its end; an upgrade that became a session
	// is reported as one instead (finishRequest).
	var st *route
	obs, w, req := rt.startRequest(w, req)
	if obs != nil {
		defer func() { rt.finishRequest(obs, req, st) }()
	}
	// Refused before it can take a MaxConns slot: nothing is routed.
	if err := checkRequest(req); err != nil {
		rt.writeError(w, req, err)
		return
	}
	// A chunked request body ends the connection after the answer. The
	// acceptor answers 400 to a first request that also has a
	// Content-Length, but net/http drops that header from later requests
	// on a kept-alive connection before we see them; RFC 9112 6.1 then
	// says to process by Transfer-Encoding and close, which this does.
	if len(req.TransferEncoding) > 0 {
		w.Header().Set("Connection", "close")
	}
	// detached: a WebSocket session outlives this call and gives its
	// MaxConns slot back when it ends.
	var detached bool
	// Per client first, so that one client's overflow takes no slot of
	// MaxConns from the others.
	slot, ok := rt.limitClient(w, req)
	if !ok {
		return
	}
	if slot.IsValid() {
		defer func() {
			if !detached {
				rt.limits.release(slot)
			}
		}()
	}
	// Counted whatever the limit, so that a limit set by SetTunables
	// counts what is open already.
	if n, limit := rt.active.Add(1), rt.tunables().MaxConns; limit > 0 && n > int64(limit) {
		rt.active.Add(-1)
		if ok, dropped := rt.overflowLog.Allow(); ok {
			rt.log.Warn().Int("max_conns", limit).Int64("suppressed", dropped).
				Str("remote_addr", req.RemoteAddr).Msg("connection limit reached")
		}
		rt.writeError(w, req, errTooManyConns)
		return
	}
	defer func() {
		if !detached {
			rt.active.Add(-1)
		}
	}()

	routes := rt.routes.Load()
	pool := routes.pool(req.Host, req.URL.Path)
	keys := rt.keys
	if k, ok := routes.keys[pool]; ok {
		keys = k
	}
	key, source, ok := keys.Key(req)
	if !ok {
		rt.writeError(w, req, errNoKey)
		return
	}
	var cookie *http.Cookie
	if source == "ip" && rt.cfg.SessionCookie != "" {
		cookie = rt.newSessionCookie(req)
		key = cookie.Value
	}

	if obs != nil {
		obs.end.Key, obs.end.KeySource, obs.end.Pool = key, source, pool
		if cookie != nil {
			obs.end.KeySource = "issued"
		}
	}
	if IsWebSocketUpgrade(req) {
		if cookie != nil {
			source = "issued"
		}
		detached = rt.serveWebSocket(w, req, pool, key, source, cookie, slot)
		return
	}
	pw := newProgressWriter(w, rt.tunables().HTTPWriteTimeout)
	// The server flushes what is left once ServeHTTP returns.
	defer pw.extend()
	w = pw
	pin := rt.affinityOf(req, pool)
	cands, err := rt.pick(pool, key)
	if err != nil {
		rt.writeError(w, req, err)
		return
	}
	if cookie != nil {
		w.Header().Add("Set-Cookie", cookie.String())
	}
	st = &route{cands: pinned(pin, cands, 1+rt.cfg.Retries), pin: pin}
	rt.proxy.ServeHTTP(w, req.WithContext(context.WithValue(req.Context(), routeKey{}, st)))
}

// pick asks the Picker for the owner in pool and up to Retries failover
// candidates.
func (rt *Router) pick(pool, key string) ([]Backend, error) {
	cands, err := rt.cfg.Picker.Pick(pool, []byte(key), 1+rt.cfg.Retries)
	if err != nil {
		return nil, fmt.Errorf("pick backend: %w", err)
	}
	if len(cands) == 0 {
		return nil, ErrNoBackends
	}
	if len(cands) > 1+rt.cfg.Retries {
		cands = cands[:1+rt.cfg.Retries]
	}
	return cands, nil
}

// dialer builds the dialer of every connect to a backend. Its callers
// bound each connect with the DialTimeout in force (SetTunables).
func (rt *Router) dialer() *net.Dialer {
	return &net.Dialer{KeepAlive: 30 * time.Second, Control: rt.dialControl}
}

// failure reports a failed backend to OnFailure and logs the failover. A
// connect the DialGuard refused is logged apart and not reported.
func (rt *Router) failure(b Backend, err error, next bool) {
	var rf *refusedError
	if errors.As(err, &rf) {
		if ok, dropped := rt.refusedLog.Allow(); ok {
			rt.log.Warn().Str("backend", b.ID).Str("addr", b.Addr).Err(rf.err).
				Bool("failover", next).Int64("suppressed", dropped).Msg("backend address refused")
		}
		return
	}
	if next {
		rt.countFailover(b)
	}
	if rt.cfg.OnFailure != nil {
		rt.cfg.OnFailure(b, err)
	}
	if ok, dropped := rt.failoverLog.Allow(); ok {
		rt.log.Warn().Str("backend", b.ID).Str("addr", b.Addr).Err(err).
			Bool("failover", next).Int64("suppressed", dropped).Msg("backend failed")
	}
}

// SetRoutes replaces the routes and the pools' key sources together;
// requests already routed keep their pool. Refused ones change nothing.
func (rt *Router) SetRoutes(routes []Route, poolKeySources map[string]string) error {
	t, err := newRouteTable(routes, rt.cfg.Key, poolKeySources)
	if err != nil {
		return err
	}
	rt.routes.Store(t)
	return nil
}

// Pool is the pool a request for host and path goes to.
func (rt *Router) Pool(host, path string) string { return rt.routes.Load().pool(host, path) }

// newSessionCookie mints a random 128-bit session ID cookie for req.
func (rt *Router) newSessionCookie(req *http.Request) *http.Cookie {
	var id [16]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails (Go 1.24+)
	c := &http.Cookie{
		Name:     rt.cfg.SessionCookie,
		Value:    hex.EncodeToString(id[:]),
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
		Secure:   rt.isHTTPS(req),
	}
	if age := rt.cfg.SessionCookieMaxAge; age > 0 {
		c.MaxAge = int(age / time.Second)
	}
	return c
}

// isHTTPS reports whether the client reached us (or a trusted proxy in
// front of us) over TLS.
func (rt *Router) isHTTPS(req *http.Request) bool {
	if req.TLS != nil {
		return true
	}
	return rt.keys.IsTrusted(peerAddr(req)) &&
		strings.EqualFold(strings.TrimSpace(req.Header.Get("X-Forwarded-Proto")), "https")
}

// peerAddr is the address of the immediate peer (after PROXY protocol).
func peerAddr(req *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		a, _ := netip.ParseAddr(req.RemoteAddr)
		return a.Unmap()
	}
	return ap.Addr().Unmap()
}

// setForwarded sets X-Forwarded-For/Proto/Host on h (the outbound header)
// for the inbound request in. A trusted peer's X-Forwarded-For chain is
// kept and our peer appended; its X-Forwarded-Proto and -Host are kept.
// Anything an untrusted peer sent is replaced.
func (rt *Router) setForwarded(in *http.Request, h http.Header) {
	peer := peerAddr(in)
	trusted := peer.IsValid() && rt.keys.IsTrusted(peer)
	prior := ""
	if trusted {
		prior = strings.Join(in.Header.Values("X-Forwarded-For"), ", ")
	}
	h.Del("Forwarded")
	h.Del("X-Forwarded-For")
	switch {
	case !peer.IsValid():
		if prior != "" {
			h.Set("X-Forwarded-For", prior)
		}
	case prior != "":
		h.Set("X-Forwarded-For", prior+", "+peer.String())
	default:
		h.Set("X-Forwarded-For", peer.String())
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	if v := in.Header.Get("X-Forwarded-Proto"); trusted && v != "" {
		proto = v
	}
	h.Set("X-Forwarded-Proto", proto)
	host := in.Host
	if v := in.Header.Get("X-Forwarded-Host"); trusted && v != "" {
		host = v
	}
	h.Set("X-Forwarded-Host", host)
}

// statusError maps an error to the status and the message the client
// sees; it is the only place that does (caddy's statusError).
func statusError(err error) (int, string) {
	var de *dialError
	var cg *clientGoneError
	var ne net.Error
	var re *requestError
	switch {
	case errors.As(err, &re):
		return re.status, re.msg
	case errors.Is(err, errNoKey):
		return http.StatusBadRequest, "no routing key"
	case errors.Is(err, errBadUpgrade):
		return http.StatusBadRequest, "bad websocket upgrade request"
	case errors.Is(err, ErrNoBackends):
		return http.StatusServiceUnavailable, "no backends"
	case errors.As(err, new(*UnavailableError)):
		return http.StatusServiceUnavailable, err.Error()
	case errors.Is(err, errTooManyConns):
		return http.StatusServiceUnavailable, "too many connections"
	case errors.Is(err, errDraining):
		return http.StatusServiceUnavailable, "draining"
	case errors.Is(err, errHijack):
		return http.StatusInternalServerError, "connection cannot be upgraded"
	case errors.As(err, &cg), errors.Is(err, context.Canceled):
		// NGINX logs 499 here but 499 is no HTTP status: a client that
		// only half-closed is still reading, and gets a standard one.
		return http.StatusBadGateway, "request canceled"
	case errors.Is(err, errBadSwitch):
		return http.StatusBadGateway, "backend sent an invalid websocket handshake"
	case errors.As(err, &de) && (errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)):
		// The node, not the backend, is out of descriptors: the client
		// should come back later or elsewhere, as with MaxConns.
		return http.StatusServiceUnavailable, "node out of file descriptors"
	case errors.As(err, &de):
		return http.StatusBadGateway, "backend unavailable"
	case errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, "backend timeout"
	default:
		return http.StatusBadGateway, "bad gateway"
	}
}

// proxyError counts a 502/503/504 the router answers itself and logs it
// at warn, one line a second at most, saying how many it stands for: the
// operator learns why clients see it without a line per request.
func (rt *Router) proxyError(req *http.Request, code int, msg string, err error) {
	reason := msg
	if errors.As(err, new(*UnavailableError)) {
		reason = "node not routing" // the detail varies; a label must not
	}
	if rt.cfg.OnProxyError != nil {
		rt.cfg.OnProxyError(code, reason)
	}
	if ok, dropped := rt.proxyErrLog.Allow(); ok {
		rt.log.Warn().Err(err).Int("status", code).Str("reason", msg).
			Str("remote_addr", req.RemoteAddr).Str("path", req.URL.Path).
			Int64("suppressed", dropped).Msg("proxy error")
	}
}

// writeError answers req with the status statusError gives err and a JSON
// body {"error": "..."}.
func (rt *Router) writeError(w http.ResponseWriter, req *http.Request, err error) {
	code, msg := statusError(err)
	if code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout {
		rt.proxyError(req, code, msg, err)
	} else if e := rt.log.Debug(); e.Enabled() {
		e.Err(err).Int("status", code).Str("remote_addr", req.RemoteAddr).
			Str("path", req.URL.Path).Msg("request failed")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	var re *requestError
	if errors.As(err, &re) && re.header[0] != "" {
		h.Set(re.header[0], re.header[1])
	}
	w.WriteHeader(code)
	fmt.Fprintf(w, "{\"error\": %q}\n", msg) // msg is a constant ASCII string
}
