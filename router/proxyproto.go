package router

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// ErrProxyHeader is wrapped by the read error of a connection from a
// trusted peer whose PROXY protocol header is missing or malformed.
var ErrProxyHeader = errors.New("invalid proxy protocol header")

// defaultProxyHeaderTimeout bounds the wait for a header when the caller
// gives no timeout: a load balancer sends it with the first packet, so a
// few seconds is already generous.
const defaultProxyHeaderTimeout = 5 * time.Second

// PROXY protocol constants from the HAProxy spec (proxy-protocol.txt).
const (
	// v1MaxLen is the longest v1 line, CRLF included ("PROXY TCP6" with
	// two full IPv6 addresses and ports). It is also the size of our
	// read buffer, so we never read far past the header.
	v1MaxLen    = 107
	v2HeaderLen = 16
	v2CmdLocal  = 0x0
	v2CmdProxy  = 0x1
	v2FamInet   = 0x1
	v2FamInet6  = 0x2
	v2AddrInet  = 12 // src 4, dst 4, ports 2+2
	v2AddrInet6 = 36 // src 16, dst 16, ports 2+2
)

var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// NewProxyProtocolListener wraps ln for use behind a load balancer that
// speaks the PROXY protocol (v1 or v2, HAProxy spec).
//
// A connection from a peer inside trusted must start with a header; its
// RemoteAddr becomes the header's source address (a LOCAL command or an
// UNKNOWN/UNSPEC family keeps the peer). A connection from any other peer
// is returned untouched and no header is expected, so an untrusted client
// cannot claim an address.
//
// Accept never waits for a header: one slow client must not hold up the
// others. The header is read on the first Read or RemoteAddr of the
// returned conn, under a read deadline of headerTimeout (zero or less
// means 5 s) or the conn's own read deadline if earlier. So RemoteAddr
// may block for that long and must not be called from the accept loop
// (for example from http.Server.ConnState for StateNew). A missing or
// malformed header, or a timeout, fails every Read of that conn with an
// error that wraps ErrProxyHeader or the timeout; RemoteAddr then reports
// the peer.
func NewProxyProtocolListener(ln net.Listener, trusted []netip.Prefix, headerTimeout time.Duration) net.Listener {
	if headerTimeout <= 0 {
		headerTimeout = defaultProxyHeaderTimeout
	}
	t := make([]netip.Prefix, 0, len(trusted))
	for _, p := range trusted {
		if p.IsValid() {
			t = append(t, normalizePrefix(p))
		}
	}
	return &proxyListener{Listener: ln, trusted: t, timeout: headerTimeout}
}

type proxyListener struct {
	net.Listener
	trusted []netip.Prefix
	timeout time.Duration
}

func (l *proxyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !isTrusted(l.trusted, addrOf(c.RemoteAddr())) {
		return c, nil
	}
	return newProxyConn(c, l.timeout), nil
}

// addrOf returns the IP of a net.Addr, or an invalid Addr.
func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	return parseHostAddr(a.String())
}

// proxyConn is a conn from a trusted peer whose PROXY header is read
// lazily, once.
type proxyConn struct {
	net.Conn
	timeout time.Duration

	hdrOnce sync.Once
	remote  net.Addr // header source, or the peer
	hdrErr  error

	// pendMu guards pending, the bytes read past the header, because
	// net.Conn allows concurrent Reads.
	pendMu  sync.Mutex
	pending []byte

	// dlMu guards the read deadline bookkeeping, so that a deadline set
	// while the header is being read (e.g. to abort the read) still
	// applies to it, and the caller's deadline is restored afterwards.
	dlMu     sync.Mutex
	userRD   time.Time // last read deadline set by the caller
	hdrRD    time.Time // deadline of the header read in progress
	inHeader bool
}

func newProxyConn(c net.Conn, timeout time.Duration) *proxyConn {
	return &proxyConn{Conn: c, timeout: timeout, remote: c.RemoteAddr()}
}

// readHeader reads the header once; concurrent callers wait for it.
func (c *proxyConn) readHeader() {
	c.hdrOnce.Do(func() {
		c.dlMu.Lock()
		c.inHeader = true
		c.hdrRD = time.Now().Add(c.timeout)
		_ = c.Conn.SetReadDeadline(earlier(c.userRD, c.hdrRD))
		c.dlMu.Unlock()

		br := bufio.NewReaderSize(c.Conn, v1MaxLen)
		src, err := readProxyHeader(br)

		c.dlMu.Lock()
		c.inHeader = false
		_ = c.Conn.SetReadDeadline(c.userRD)
		c.dlMu.Unlock()

		if err != nil {
			c.hdrErr = fmt.Errorf("proxy protocol from %v: %w", c.Conn.RemoteAddr(), err)
			return
		}
		if src != nil {
			c.remote = src
		}
		if n := br.Buffered(); n > 0 {
			c.pending, _ = br.Peek(n)
		}
	})
}

// earlier returns the earlier deadline, the zero time meaning none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (c *proxyConn) Read(p []byte) (int, error) {
	c.readHeader()
	if c.hdrErr != nil {
		return 0, c.hdrErr
	}
	c.pendMu.Lock()
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil // let the header buffer go
		}
		c.pendMu.Unlock()
		return n, nil
	}
	c.pendMu.Unlock()
	return c.Conn.Read(p)
}

// unwrap returns the underlying conn when no byte read past the header
// is still pending, so that a relay may use the socket itself.
func (c *proxyConn) unwrap() (net.Conn, bool) {
	c.readHeader()
	if c.hdrErr != nil {
		return nil, false
	}
	c.pendMu.Lock()
	defer c.pendMu.Unlock()
	return c.Conn, len(c.pending) == 0
}

// RemoteAddr returns the source address from the PROXY header, reading
// the header first if needed.
func (c *proxyConn) RemoteAddr() net.Addr {
	c.readHeader()
	return c.remote
}

func (c *proxyConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *proxyConn) SetReadDeadline(t time.Time) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.userRD = t
	if c.inHeader {
		t = earlier(t, c.hdrRD)
	}
	return c.Conn.SetReadDeadline(t)
}

// CloseWrite half-closes the conn when the underlying conn can, so that
// WebSocket and TCP splicing code sees the same capability as on a bare
// *net.TCPConn.
func (c *proxyConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("close write: not supported by the underlying conn")
}

// readProxyHeader reads a v1 or v2 header from br. It returns the source
// address, or nil when the header says to keep the peer (LOCAL, UNKNOWN,
// UNSPEC, UNIX).
func readProxyHeader(br *bufio.Reader) (net.Addr, error) {
	first, err := br.Peek(1)
	if err != nil {
		return nil, headerReadErr(err)
	}
	switch first[0] {
	case 'P':
		return readV1(br)
	case '\r':
		return readV2(br)
	}
	return nil, fmt.Errorf("%w: no header", ErrProxyHeader)
}

// headerReadErr turns a short read into ErrProxyHeader, keeping timeouts
// and other I/O errors as they are.
func headerReadErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated", ErrProxyHeader)
	}
	return err
}

// readV1 reads "PROXY TCP4|TCP6|UNKNOWN ... \r\n".
func readV1(br *bufio.Reader) (net.Addr, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("%w: v1 line longer than %d bytes", ErrProxyHeader, v1MaxLen)
	}
	if err != nil {
		return nil, headerReadErr(err)
	}
	line, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok {
		return nil, fmt.Errorf("%w: v1 line not ended by CRLF", ErrProxyHeader)
	}
	rest, ok := bytes.CutPrefix(line, []byte("PROXY "))
	if !ok {
		return nil, fmt.Errorf("%w: no header", ErrProxyHeader)
	}
	// The spec lets UNKNOWN carry anything up to CRLF, to be ignored.
	if bytes.Equal(rest, []byte("UNKNOWN")) || bytes.HasPrefix(rest, []byte("UNKNOWN ")) {
		return nil, nil
	}
	f := bytes.Split(rest, []byte(" "))
	if len(f) != 5 {
		return nil, fmt.Errorf("%w: v1 wants 5 fields, got %d", ErrProxyHeader, len(f))
	}
	var want4 bool
	switch string(f[0]) {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return nil, fmt.Errorf("%w: v1 protocol %q", ErrProxyHeader, f[0])
	}
	src, err1 := netip.ParseAddr(string(f[1]))
	dst, err2 := netip.ParseAddr(string(f[2]))
	if err1 != nil || err2 != nil || src.Zone() != "" || dst.Zone() != "" ||
		src.Is4() != want4 || dst.Is4() != want4 {
		return nil, fmt.Errorf("%w: v1 addresses %q %q for %s", ErrProxyHeader, f[1], f[2], f[0])
	}
	sport, err1 := parseV1Port(f[3])
	_, err2 = parseV1Port(f[4])
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%w: v1 ports %q %q", ErrProxyHeader, f[3], f[4])
	}
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(src.Unmap(), sport)), nil
}

// parseV1Port parses a decimal port without sign or leading zeros, as the
// spec writes them.
func parseV1Port(b []byte) (uint16, error) {
	if len(b) > 1 && b[0] == '0' {
		return 0, errors.New("leading zero")
	}
	p, err := strconv.ParseUint(string(b), 10, 16)
	return uint16(p), err
}

// readV2 reads the binary header: 12-byte signature, version/command,
// family/transport, a big-endian length, then that many bytes of
// addresses and TLVs (which we skip).
func readV2(br *bufio.Reader) (net.Addr, error) {
	var hdr [v2HeaderLen]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, headerReadErr(err)
	}
	if !bytes.Equal(hdr[:12], v2Signature) {
		return nil, fmt.Errorf("%w: no header", ErrProxyHeader)
	}
	if v := hdr[12] >> 4; v != 2 {
		return nil, fmt.Errorf("%w: v2 version %d", ErrProxyHeader, v)
	}
	cmd, fam := hdr[12]&0x0f, hdr[13]>>4
	n := int(binary.BigEndian.Uint16(hdr[14:16]))

	var src net.Addr
	switch cmd {
	case v2CmdLocal:
		// Health checks from the balancer itself: keep the peer.
	case v2CmdProxy:
		var addr [v2AddrInet6]byte
		var need int
		switch fam {
		case v2FamInet:
			need = v2AddrInet
		case v2FamInet6:
			need = v2AddrInet6
		}
		if n < need {
			return nil, fmt.Errorf("%w: v2 address block of %d bytes for family %d", ErrProxyHeader, n, fam)
		}
		if need > 0 {
			if _, err := io.ReadFull(br, addr[:need]); err != nil {
				return nil, headerReadErr(err)
			}
			n -= need
			ip, _ := netip.AddrFromSlice(addr[:need/2-2])
			port := binary.BigEndian.Uint16(addr[need-4:])
			src = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), port))
		}
		// UNSPEC and UNIX: the spec says to use the real endpoints.
	default:
		return nil, fmt.Errorf("%w: v2 command %d", ErrProxyHeader, cmd)
	}
	if _, err := br.Discard(n); err != nil {
		return nil, headerReadErr(err)
	}
	return src, nil
}
