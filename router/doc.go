// Package router is the http.Handler of a meshlb node. It owns:
//
//   - routing-key extraction (KeyExtractor: query, cookie, header,
//     subprotocol token, then the client IP, trusting forwarding headers
//     only from configured proxies);
//   - the session cookie: a request whose only key is its IP gets a random
//     session ID cookie and is routed by it, so reconnects from a new IP
//     stick;
//   - HTTP proxying through one httputil.ReverseProxy and one shared
//     transport, with X-Forwarded-* set; a client that takes no byte of a
//     response for Config.HTTPWriteTimeout is cut off;
//   - WebSocket proxying: the router performs the backend handshake itself
//     (client's path, query, headers and Sec-WebSocket-Key unchanged),
//     passes a non-101 answer on as it was, and after a 101 relays bytes
//     client → backend and whole frames backend → client (payloads
//     untouched, so permessage-deflate works end to end);
//   - failover: when the owner refuses the connection or fails before
//     answering, the next candidate of the Picker is tried (at most
//     Config.Retries more), and Config.OnFailure observes the failure;
//   - the registry of hijacked connections, for Drain and Close;
//   - what observers see (traffic.go): Config.OnHandshake, OnSessionEnd
//     (bytes, the close code the client got and who closed) and
//     OnRequestEnd, and per-backend counters (Traffic). The relay counts
//     bytes in each session's atomics as it always did; the rest is noted
//     once per handshake, close frame, request or session end, so the
//     per-frame path takes no lock and allocates nothing;
//   - strict handshakes both ways: a client's upgrade must follow RFC 6455
//     4.2.1 (400, or 426 with Sec-WebSocket-Version: 13), and a backend's
//     101 must carry the Sec-WebSocket-Accept of the key sent (502 and a
//     passive failure otherwise); HTTP/2's preface gets 505 and CONNECT
//     405, as NGINX answers them;
//   - the mapping of errors to statuses (statusError): 400 no routing key
//     or bad upgrade, 503 no backends / draining / too many connections /
//     the node out of file descriptors,
//     502 backend unreachable or broken (or the request canceled: 499 is
//     no status to send), 504 backend timeout; bodies are JSON
//     {"error": "..."}.
//
// Because the router keeps backend → client frame boundaries, it can close
// a WebSocket cleanly at any time. The close codes it sends to clients:
//
//   - the code given to Drain: 1001 (Going Away) or 1012 (Service Restart);
//   - 1001 (Going Away) when Config.WSIdleTimeout expires;
//   - 1014 (Bad Gateway) when the backend connection is lost without a
//     close frame. 1014 is the registered WebSocket counterpart of HTTP 502
//     and differs from the drain codes, so a client can tell "this node is
//     going away" from "your backend went away"; either way it should
//     reconnect, and the node routes it anew;
//   - 1008 (Policy Violation) when the backend took no byte for
//     Config.WSWriteTimeout (a client that stops reading is closed
//     without one: it would not read it);
//   - 1002 (Protocol Error) for an unmasked client frame, 1009 (Message
//     Too Big) for one over Config.WSMaxFrameSize: client frame headers
//     are checked as they pass, and no frame is held.
//
// Close frames of the backend and of the client pass through unchanged.
//
// # Where a request goes
//
// Every request enters at Router.ServeHTTP (router.go). net/http calls it
// for plain HTTP; the node's acceptor (node/accept.go), which takes
// WebSocket upgrades off the listener before net/http sees them, calls it
// for those. ServeHTTP takes the routing key (key.go), then hands plain
// HTTP to the reverse proxy (httpproxy.go) and upgrades to serveWebSocket
// (websocket.go), which does the backend handshake, passes the answer on
// and hijacks the client connection.
//
// The relay lives in two places. On Linux both sockets of a session go
// into the Router's epoll loops (poll_linux.go): an idle WebSocket holds
// no goroutine and no buffer, and frameTracker (frames.go) follows the
// backend → client frame boundaries in the byte stream. Elsewhere, or when
// the sockets cannot be taken, two goroutines relay each session
// (upstreamCopier and frameRelay, websocket.go). Either way the session
// is in the registry, so Drain and Close (drain.go) reach it.
package router
