//go:build !unix

package node

import "net"

// waitQueued cannot poll a listener here; shed accepts blind.
func waitQueued(net.Listener) (queued, ok bool) { return false, false }

func moreQueued(net.Listener) bool { return false }

func readNow(net.Conn, []byte) bool { return false }
