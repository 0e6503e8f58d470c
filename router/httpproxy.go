package router

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"sync/atomic"
)

// routeKey is the context key of a request's *route.
type routeKey struct{}

// route is a request's candidates and, once it is known, the backend that
// served it.
type route struct {
	cands  []Backend
	served atomic.Pointer[Backend]
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
