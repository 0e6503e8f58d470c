//go:build !linux

package node

import "net"

// listenConfig leaves keep-alive to Go, which sets it on each accepted
// connection.
var listenConfig net.ListenConfig
