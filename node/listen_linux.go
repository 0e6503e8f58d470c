package node

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// tcpKeepAlive is the keep-alive of accepted connections, Go's default:
// the first probe after 15 s idle, then every 15 s, 9 unanswered end it.
// With WebSocket pings off (the default) it is what finds a client that
// vanished without a FIN.
const tcpKeepAlive = 15 * time.Second

// listenConfig sets keep-alive once, on the listening socket: Linux
// copies it to every accepted socket. Go would otherwise set it with four
// setsockopt calls per accepted connection.
var listenConfig = net.ListenConfig{
	KeepAlive: -1,
	Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			secs := int(tcpKeepAlive / time.Second)
			for _, o := range []struct{ level, opt, v int }{
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs},
				{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs},
				{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
			} {
				if serr = unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); serr != nil {
					return
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	},
}
