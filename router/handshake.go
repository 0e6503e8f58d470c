package router

import (
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strings"
)

// requestError is a request the router refuses before routing it: the
// status, a constant message for the JSON body, and the headers that
// status requires (Allow on 405, Sec-WebSocket-Version on 426).
type requestError struct {
	status int
	msg    string
	header [2]string // name, value; empty for none
}

func (e *requestError) Error() string { return e.msg }

// The requests refused at the edge. Both ways into the router (the
// acceptor's upgrades and net/http's requests) reach checkRequest, so the
// same rules hold on both.
var (
	// HTTP/2's connection preface parses as "PRI * HTTP/2.0", and net/http
	// hands it to the handler so that handlers can wire up h2c themselves.
	// We speak HTTP/1.1 only: answer as NGINX does to an HTTP/2 request
	// line on an HTTP/1 listener, 505.
	errHTTP2 = &requestError{status: http.StatusHTTPVersionNotSupported,
		msg: "HTTP/2 is not supported on this listener; use HTTP/1.1"}
	// CONNECT would turn the node into an open TCP relay. NGINX answers it
	// 405; RFC 9110 15.5.6 wants an Allow header with a 405.
	errConnect = &requestError{status: http.StatusMethodNotAllowed,
		msg:    "CONNECT is not supported",
		header: [2]string{"Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"}}

	// RFC 6455 4.2.1: the upgrades a server must refuse with 400.
	errUpgradeMethod  = &requestError{status: http.StatusBadRequest, msg: "bad websocket upgrade request: want GET without a body"}
	errUpgradeProto   = &requestError{status: http.StatusBadRequest, msg: "bad websocket upgrade request: want HTTP/1.1"}
	errUpgradeKey     = &requestError{status: http.StatusBadRequest, msg: "bad websocket upgrade request: want one Sec-WebSocket-Key of 16 bytes in base64"}
	errUpgradeVersion = &requestError{status: http.StatusUpgradeRequired,
		msg:    "unsupported websocket version: want Sec-WebSocket-Version 13",
		header: [2]string{"Sec-WebSocket-Version", "13"}}
)

// checkRequest refuses what the router must not forward: HTTP/2's
// preface, CONNECT, and a WebSocket upgrade that breaks RFC 6455 4.2.1.
// It returns nil or a *requestError.
func checkRequest(req *http.Request) error {
	switch {
	case req.Method == "PRI" || req.ProtoMajor > 1:
		return errHTTP2
	case req.Method == http.MethodConnect:
		return errConnect
	case IsWebSocketUpgrade(req):
		return checkUpgrade(req)
	}
	return nil
}

// checkUpgrade checks a client's opening handshake as RFC 6455 4.2.1 asks
// of a server: an HTTP/1.1 GET (no body), exactly one Sec-WebSocket-Key
// that is 16 bytes in base64, and exactly one Sec-WebSocket-Version, 13. A
// wrong or missing version gets 426 with the version we speak (4.2.2),
// as gobwas/ws answers; the rest gets 400. Upgrade and Connection are
// already known to hold their tokens: that is what made req an upgrade.
func checkUpgrade(req *http.Request) error {
	if req.Method != http.MethodGet || req.ContentLength != 0 || len(req.TransferEncoding) > 0 {
		return errUpgradeMethod
	}
	if !req.ProtoAtLeast(1, 1) {
		return errUpgradeProto
	}
	if !validKey(req.Header.Values("Sec-WebSocket-Key")) {
		return errUpgradeKey
	}
	if v := req.Header.Values("Sec-WebSocket-Version"); len(v) != 1 || strings.TrimSpace(v[0]) != "13" {
		return errUpgradeVersion
	}
	return nil
}

// validKey reports whether vs is one Sec-WebSocket-Key value that decodes
// to 16 bytes: 24 characters of padded standard base64.
func validKey(vs []string) bool {
	if len(vs) != 1 {
		return false
	}
	k := strings.TrimSpace(vs[0])
	if len(k) != 24 {
		return false
	}
	var b [18]byte // base64.StdEncoding.DecodedLen(24)
	n, err := base64.StdEncoding.Strict().Decode(b[:], []byte(k))
	return err == nil && n == 16
}

// websocketGUID is RFC 6455's magic string for Sec-WebSocket-Accept.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptFor is the Sec-WebSocket-Accept that answers key (RFC 6455 4.2.2).
func acceptFor(key string) string {
	h := sha1.Sum([]byte(key + websocketGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// validSwitch reports whether a backend's 101 completes the handshake the
// node sent with key, as RFC 6455 4.1 has a client check it: Upgrade
// websocket, Connection upgrade, and exactly one Sec-WebSocket-Accept
// that matches key. A 101 without it is not a WebSocket the client asked
// for (a backend or something in front of it answering on its own, or a
// cached 101 replayed), and tunnelling it would hand the client's
// connection to whatever sent it.
func validSwitch(h http.Header, key string) bool {
	if !headerHasToken(h, "Upgrade", "websocket") || !headerHasToken(h, "Connection", "upgrade") {
		return false
	}
	a := h.Values("Sec-WebSocket-Accept")
	return len(a) == 1 && strings.TrimSpace(a[0]) == acceptFor(strings.TrimSpace(key))
}
