//go:build !linux

package router

import "errors"

// Without epoll every WebSocket is relayed by goroutines (websocket.go);
// these stand-ins keep the shared code compiling.

type pollState struct {
	polled bool
}

type poller struct{}

func (p *poller) close() {}

func (rt *Router) adopt(*wsConn) bool { return false }

func (c *wsConn) closeFDs()                 {}
func (c *wsConn) unref()                    {}
func (c *wsConn) dropParked(bool)           {}
func (c *wsConn) requestClosePolled(uint16) {}
func (c *wsConn) writeClientPolled([]byte) error {
	return errors.New("no epoll relay on this platform")
}
