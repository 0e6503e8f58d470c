package router

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"sync/atomic"
	"time"
)

// routeKey is the context key of a request's *route.
type routeKey struct{}

// route is a request's candidates and, once it is known, the backend that
// served it.
type route struct {
	cands     []Backend
	served    atomic.Pointer[Backend]
	failovers atomic.Int32 // candidates that failed before one answered
	pin       affinityPin  // the client's affinity cookie (affinity.go)
}

func routeFrom(ctx context.Context) *route {
	st, _ := ctx.Value(routeKey{}).(*route)
	return st
}

// rewrite points the outbound request at the first candidate, keeps the
// client's Host and sets X-Forwarded-*. ReverseProxy has already removed
// hop-by-hop and forwarding headers from pr.Out.
func (rt *Router) rewrite(pr *httputil.ProxyRequest) {
	st := routeFrom(pr.In.Context())
	pr.Out.URL.Scheme = "http"
	if rt.btls != nil {
		pr.Out.URL.Scheme = "https"
	}
	pr.Out.URL.Host = st.cands[0].Addr
	pr.Out.Host = pr.In.Host
	rt.setForwarded(pr.In, pr.Out.Header)
	// Protocol switches go through serveWebSocket only, so that every
	// hijacked connection is registered for drain. Anything else is
	// forwarded as a plain request.
	pr.Out.Header.Del("Connection")
	pr.Out.Header.Del("Upgrade")
}

// modifyResponse rejects a 101 answer to a request that did not ask for
// it and logs, at debug, which backend served.
func (rt *Router) modifyResponse(res *http.Response) error {
	if res.StatusCode == http.StatusSwitchingProtocols {
		return errors.New("backend switched protocols unasked")
	}
	if st := routeFrom(res.Request.Context()); st != nil {
		if b := st.served.Load(); b != nil {
			if c := rt.affinityCookie(res.Request, st.pin, b.ID); c != nil {
				res.Header.Add("Set-Cookie", c.String())
			}
		}
	}
	if e := rt.log.Debug(); e.Enabled() {
		if b := routeFrom(res.Request.Context()).served.Load(); b != nil {
			e.Str("backend", b.ID).Int("status", res.StatusCode).Str("path", res.Request.URL.Path).Msg("request proxied")
		} else {
			e.Discard()
		}
	}
	return nil
}

// failoverTransport tries the request's candidates in order while dialling
// fails: nothing was sent then, so a retry cannot repeat a side effect. A
// body is retried only if no byte of it was read.
type failoverTransport struct{ rt *Router }

var _ http.RoundTripper = &failoverTransport{}

func (t *failoverTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tr := t.rt.transport
	st := routeFrom(req.Context())
	if st == nil {
		return tr.RoundTrip(req)
	}
	var body *retryBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &retryBody{rc: req.Body}
	}
	var err error
	for i, b := range st.cands {
		out := req
		if i > 0 {
			out = req.Clone(req.Context())
			out.URL.Host = b.Addr
		}
		if body != nil {
			out.Body = body
		}
		var res *http.Response
		res, err = tr.RoundTrip(out)
		if err == nil {
			st.served.Store(&b)
			return res, nil
		}
		var de *dialError
		if !errors.As(err, &de) || req.Context().Err() != nil {
			return nil, err
		}
		last := i == len(st.cands)-1 || (body != nil && body.touched.Load())
		t.rt.failure(b, err, !last)
		if !last {
			st.failovers.Add(1)
		}
		if last {
			return nil, err
		}
	}
	return nil, err
}

// retryBody lets a request body be offered to another backend after a
// dial error: the transport's Close is ignored (the http.Server closes the
// inbound body), and touched records whether any byte was consumed.
type retryBody struct {
	rc      io.ReadCloser
	touched atomic.Bool
}

func (b *retryBody) Read(p []byte) (int, error) {
	b.touched.Store(true)
	return b.rc.Read(p)
}

func (b *retryBody) Close() error { return nil }

// httpWriteChunk is the most a progressWriter hands to the connection
// under one deadline.
const httpWriteChunk = 16 << 10

// progressWriter gives each write to an HTTP client Config.HTTPWriteTimeout
// to complete, and starts the timeout again once it has: a client that
// stops reading is cut off, one that reads slowly but reads is not.
// http.Server's WriteTimeout cannot do this: it bounds the whole
// response, so a long download would need it disabled, and then a client
// that never reads a 64 MB response holds it forever. Writes are cut to
// httpWriteChunk, so that progress is seen at least that often.
type progressWriter struct {
	http.ResponseWriter
	rc http.ResponseController // of the server's writer
	d  time.Duration
}

func newProgressWriter(w http.ResponseWriter, d time.Duration) *progressWriter {
	pw := &progressWriter{ResponseWriter: w, rc: *http.NewResponseController(w), d: d}
	pw.extend() // the headers of an answer without a body go at the end
	return pw
}

// extend moves the write deadline to d from now. Where the connection
// cannot take one (ErrNotSupported), there is no bound, as before.
func (w *progressWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.d)) }

func (w *progressWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), httpWriteChunk)
		w.extend()
		n, err := w.ResponseWriter.Write(p[:k])
		written += n
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}

// FlushError is what http.ResponseController.Flush calls: a flush writes
// to the connection too.
func (w *progressWriter) FlushError() error {
	w.extend()
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *progressWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
