package router

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/coder/websocket"
)

// newTLSBackend serves h over TLS on loopback (httptest's certificate,
// for 127.0.0.1 and example.com) and returns its roots.
func newTLSBackend(t *testing.T, id string, h http.Handler, mtls bool) (Backend, *httptest.Server) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	if mtls {
		srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return Backend{ID: id, Addr: srv.Listener.Addr().String()}, srv
}

// TestBackendTLS: with BackendTLS, WebSockets and HTTP reach a TLS
// backend verified against its roots, by IP SAN or by a configured
// name; a backend whose certificate does not verify gets 502, never a
// plain connection; a client certificate is sent for mutual TLS.
func TestBackendTLS(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/ws", echoWS("tls-1", nil, nil))
	mux.Handle("/", httpEcho("tls-1"))
	b, srv := newTLSBackend(t, "tls-1", mux, false)
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	for _, tc := range []struct {
		label string
		cfg   *tls.Config
		ok    bool
	}{
		{"by ip san", &tls.Config{RootCAs: roots}, true},
		{"by name", &tls.Config{RootCAs: roots, ServerName: "example.com"}, true},
		{"wrong name", &tls.Config{RootCAs: roots, ServerName: "other.test"}, false},
		{"unknown ca", &tls.Config{}, false},
		{"insecure", &tls.Config{InsecureSkipVerify: true}, true},
	} {
		t.Run(tc.label, func(t *testing.T) {
			_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{b}}, BackendTLS: tc.cfg, Retries: -1})
			res, err := http.Get(front.URL + "/x?session_id=a")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if tc.ok != (res.StatusCode == 200) {
				t.Fatalf("http: %d %q; want ok=%v", res.StatusCode, body, tc.ok)
			}
			if !tc.ok {
				if res.StatusCode != http.StatusBadGateway {
					t.Fatalf("http: %d; want 502", res.StatusCode)
				}
				_, res, err := websocket.Dial(t.Context(), wsURL(front, "/ws?session_id=a"), nil)
				if err == nil || res == nil || res.StatusCode != http.StatusBadGateway {
					t.Fatalf("ws to an unverified backend: %v %v; want 502", res, err)
				}
				return
			}
			c, _ := dial(t, wsURL(front, "/ws?session_id=a"), nil)
			roundTrip(t, c, websocket.MessageText, []byte("over tls"))
		})
	}

	t.Run("mtls", func(t *testing.T) {
		mb, msrv := newTLSBackend(t, "mtls-1", echoWS("mtls-1", nil, nil), true)
		mroots := msrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
		// httptest's own certificate serves as the client's.
		cfg := &tls.Config{RootCAs: mroots, Certificates: msrv.TLS.Certificates}
		_, front := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{mb}}, BackendTLS: cfg})
		c, _ := dial(t, wsURL(front, "/?session_id=a"), nil)
		roundTrip(t, c, websocket.MessageBinary, []byte{1, 2, 3})

		_, bare := newFront(t, Config{Picker: &fixedPicker{backends: []Backend{mb}}, BackendTLS: &tls.Config{RootCAs: mroots}, Retries: -1})
		if _, res, err := websocket.Dial(t.Context(), wsURL(bare, "/?session_id=a"), nil); err == nil || res == nil || res.StatusCode != http.StatusBadGateway {
			t.Fatalf("mtls backend without a client certificate: %v %v; want 502", res, err)
		}
	})
}
