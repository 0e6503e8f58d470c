package router

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// peerConn is a conn whose RemoteAddr is chosen by the test, so net.Pipe
// conns can come from a trusted or an untrusted peer.
type peerConn struct {
	net.Conn
	peer net.Addr
}

func (c peerConn) RemoteAddr() net.Addr { return c.peer }

// chanListener hands out the conns sent on it.
type chanListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newChanListener() *chanListener {
	return &chanListener{conns: make(chan net.Conn, 4), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

var (
	trustedPeer   = &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 999}
	untrustedPeer = &net.TCPAddr{IP: net.IPv4(9, 9, 9, 9), Port: 999}
	testTrusted   = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
)

// acceptPipe returns the server side, as accepted through a PROXY
// listener, of a pipe from peer, and the client side.
func acceptPipe(t *testing.T, peer net.Addr, timeout time.Duration) (server, client net.Conn) {
	t.Helper()
	cl := newChanListener()
	ln := NewProxyProtocolListener(cl, testTrusted, timeout)
	t.Cleanup(func() { ln.Close() })
	s, c := net.Pipe()
	cl.conns <- peerConn{Conn: s, peer: peer}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); c.Close() })
	return server, c
}

// v2Header builds a v2 header by hand, per the spec: signature, version
// and command, family and transport, big-endian length, body.
func v2Header(verCmd, famProto byte, body ...[]byte) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	b = append(b, verCmd, famProto, 0, 0)
	n := 0
	for _, p := range body {
		b = append(b, p...)
		n += len(p)
	}
	binary.BigEndian.PutUint16(b[14:16], uint16(n))
	return b
}

// inet4 and inet6 are v2 address blocks: src, dst, src port, dst port.
func inet4(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, sport), dport)
}

func inet6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, sport), dport)
}

const (
	v2Proxy   = 0x21
	v2Local   = 0x20
	famTCP4   = 0x11
	famTCP6   = 0x21
	famUnix   = 0x31
	famUnspec = 0x00
)

const proxyPayload = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

var proxyCases = []struct {
	name       string
	in         []byte
	wantRemote string // "" means the peer
	wantData   string
	wantErr    bool
}{
	{name: "v1 tcp4", in: []byte("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n" + proxyPayload), wantRemote: "192.168.0.1:56324", wantData: proxyPayload},
	{name: "v1 tcp6", in: []byte("PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n" + proxyPayload), wantRemote: "[2001:db8::1]:4711", wantData: proxyPayload},
	{name: "v1 tcp6 mapped", in: []byte("PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n"), wantRemote: "1.2.3.4:1"},
	{name: "v1 tcp6 longest", in: []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n" + proxyPayload), wantRemote: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", wantData: proxyPayload},
	{name: "v1 unknown", in: []byte("PROXY UNKNOWN\r\n" + proxyPayload), wantData: proxyPayload},
	{name: "v1 unknown with addresses", in: []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n" + proxyPayload), wantData: proxyPayload},
	{name: "v1 no data", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), wantRemote: "1.2.3.4:1"},
	{name: "v1 header in data is data", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nPROXY TCP4 6.6.6.6 5.6.7.8 1 2\r\n"), wantRemote: "1.2.3.4:1", wantData: "PROXY TCP4 6.6.6.6 5.6.7.8 1 2\r\n"},
	{name: "v1 unknown longest", in: []byte("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n" + proxyPayload), wantData: proxyPayload},
	{name: "v1 too long", in: []byte("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655350\r\n"), wantErr: true},
	{name: "v1 endless", in: []byte("PROXY " + strings.Repeat("x", 4000)), wantErr: true},
	{name: "v1 lf only", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + proxyPayload), wantErr: true},
	{name: "v1 family mismatch", in: []byte("PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"), wantErr: true},
	{name: "v1 v4 as tcp6", in: []byte("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), wantErr: true},
	{name: "v1 port too big", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), wantErr: true},
	{name: "v1 port leading zero", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), wantErr: true},
	{name: "v1 port signed", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), wantErr: true},
	{name: "v1 double space", in: []byte("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), wantErr: true},
	{name: "v1 missing field", in: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), wantErr: true},
	{name: "v1 zone", in: []byte("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), wantErr: true},
	{name: "v1 bad protocol", in: []byte("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), wantErr: true},
	{name: "v1 truncated", in: []byte("PROXY TCP4 1.2.3.4"), wantErr: true},
	{name: "v2 proxy tcp4", in: append(v2Header(v2Proxy, famTCP4, inet4("1.2.3.4", "5.6.7.8", 1000, 443)), proxyPayload...), wantRemote: "1.2.3.4:1000", wantData: proxyPayload},
	{name: "v2 proxy tcp6", in: append(v2Header(v2Proxy, famTCP6, inet6("2001:db8::1", "2001:db8::2", 4711, 443)), proxyPayload...), wantRemote: "[2001:db8::1]:4711", wantData: proxyPayload},
	{name: "v2 proxy tcp4 with tlvs", in: append(v2Header(v2Proxy, famTCP4, inet4("1.2.3.4", "5.6.7.8", 1000, 443), []byte{0x04, 0, 3, 'a', 'b', 'c'}), proxyPayload...), wantRemote: "1.2.3.4:1000", wantData: proxyPayload},
	{name: "v2 proxy large tlv", in: append(v2Header(v2Proxy, famTCP6, inet6("2001:db8::1", "::1", 1, 2), bytes.Repeat([]byte{0xee}, 3000)), proxyPayload...), wantRemote: "[2001:db8::1]:1", wantData: proxyPayload},
	{name: "v2 local tcp4", in: append(v2Header(v2Local, famTCP4, inet4("1.2.3.4", "5.6.7.8", 1000, 443)), proxyPayload...), wantData: proxyPayload},
	{name: "v2 local tcp6", in: append(v2Header(v2Local, famTCP6, inet6("2001:db8::1", "2001:db8::2", 1, 2)), proxyPayload...), wantData: proxyPayload},
	{name: "v2 local empty", in: append(v2Header(v2Local, famUnspec), proxyPayload...), wantData: proxyPayload},
	{name: "v2 proxy unspec", in: append(v2Header(v2Proxy, famUnspec), proxyPayload...), wantData: proxyPayload},
	{name: "v2 proxy unix", in: append(v2Header(v2Proxy, famUnix, make([]byte, 216)), proxyPayload...), wantData: proxyPayload},
	{name: "v2 short address block", in: v2Header(v2Proxy, famTCP4, make([]byte, 8)), wantErr: true},
	{name: "v2 short tcp6 block", in: v2Header(v2Proxy, famTCP6, make([]byte, 12)), wantErr: true},
	{name: "v2 version 1", in: v2Header(0x11, famTCP4, inet4("1.2.3.4", "5.6.7.8", 1, 2)), wantErr: true},
	{name: "v2 command 2", in: v2Header(0x22, famTCP4, inet4("1.2.3.4", "5.6.7.8", 1, 2)), wantErr: true},
	{name: "v2 truncated body", in: v2Header(v2Proxy, famTCP4, inet4("1.2.3.4", "5.6.7.8", 1, 2))[:20], wantErr: true},
	{name: "v2 truncated tlv", in: v2Header(v2Local, famTCP4, make([]byte, 100))[:50], wantErr: true},
	{name: "v2 bad signature", in: []byte("\r\n\r\n\x00\r\nQUIZ\n\x21\x11\x00\x00"), wantErr: true},
	{name: "no header", in: []byte(proxyPayload), wantErr: true},
	{name: "proxy-like method", in: []byte("POST / HTTP/1.1\r\n\r\n"), wantErr: true},
	{name: "empty", in: nil, wantErr: true},
}

func TestProxyProtocolHeaders(t *testing.T) {
	for _, c := range proxyCases {
		t.Run(c.name, func(t *testing.T) {
			server, client := acceptPipe(t, trustedPeer, time.Minute)
			// One write: the header and the data arrive together, so the
			// bytes read past the header must be kept.
			go func() {
				client.Write(c.in)
				client.Close()
			}()
			remote := server.RemoteAddr().String()
			data, err := io.ReadAll(server)
			if c.wantErr {
				if !errors.Is(err, ErrProxyHeader) {
					t.Errorf("read error = %v; want ErrProxyHeader", err)
				}
				if remote != trustedPeer.String() {
					t.Errorf("RemoteAddr = %s; want the peer %v", remote, trustedPeer)
				}
				// Every later read fails the same way.
				if _, err2 := server.Read(make([]byte, 1)); !errors.Is(err2, ErrProxyHeader) {
					t.Errorf("second read error = %v; want ErrProxyHeader", err2)
				}
				return
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			want := c.wantRemote
			if want == "" {
				want = trustedPeer.String()
			}
			if remote != want {
				t.Errorf("RemoteAddr = %s; want %s", remote, want)
			}
			if string(data) != c.wantData {
				t.Errorf("data = %q; want %q", data, c.wantData)
			}
		})
	}
}

func TestProxyProtocolUntrustedPassthrough(t *testing.T) {
	in := "PROXY TCP4 6.6.6.6 5.6.7.8 1 2\r\n" + proxyPayload
	server, client := acceptPipe(t, untrustedPeer, time.Minute)
	if _, ok := server.(peerConn); !ok {
		t.Errorf("untrusted conn is %T; want it returned untouched", server)
	}
	go func() {
		client.Write([]byte(in))
		client.Close()
	}()
	if got := server.RemoteAddr().String(); got != untrustedPeer.String() {
		t.Errorf("RemoteAddr = %s; want %v", got, untrustedPeer)
	}
	data, err := io.ReadAll(server)
	if err != nil || string(data) != in {
		t.Errorf("read = %q, %v; want the header as data", data, err)
	}
}

func TestProxyProtocolReadFirst(t *testing.T) {
	// Read before RemoteAddr, in small pieces.
	server, client := acceptPipe(t, trustedPeer, time.Minute)
	go func() {
		client.Write([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nabcdef"))
		client.Close()
	}()
	var got []byte
	buf := make([]byte, 4)
	for {
		n, err := server.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(got) != "abcdef" {
		t.Errorf("data = %q; want abcdef", got)
	}
	if r := server.RemoteAddr().String(); r != "1.2.3.4:1" {
		t.Errorf("RemoteAddr = %s; want 1.2.3.4:1", r)
	}
}

func TestProxyProtocolHeaderTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		server, _ := acceptPipe(t, trustedPeer, 50*time.Millisecond)
		start := time.Now()
		_, err := server.Read(make([]byte, 1))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read error = %v; want a deadline error", err)
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Errorf("gave up after %v; want 50ms", d)
		}
	})
}

func TestProxyProtocolDeadlineRestored(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		server, client := acceptPipe(t, trustedPeer, 50*time.Millisecond)
		go func() {
			client.Write([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))
			time.Sleep(time.Second) // longer than the header timeout
			client.Write([]byte("late"))
		}()
		server.RemoteAddr()
		buf := make([]byte, 4)
		if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "late" {
			t.Errorf("read after header = %q, %v; want late", buf, err)
		}

		// A caller's deadline survives the header read.
		server, client = acceptPipe(t, trustedPeer, 50*time.Millisecond)
		go func() {
			client.Write([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))
		}()
		server.SetReadDeadline(time.Now().Add(time.Second))
		server.RemoteAddr()
		start := time.Now()
		if _, err := server.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read error = %v; want the caller's deadline", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Errorf("caller's deadline hit after %v; want 1s", d)
		}
	})
}

func TestProxyProtocolDeadlineAbortsHeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		server, _ := acceptPipe(t, trustedPeer, time.Hour)
		errc := make(chan error, 1)
		go func() {
			_, err := server.Read(make([]byte, 1))
			errc <- err
		}()
		synctest.Wait() // the reader is blocked in the header read
		server.SetReadDeadline(time.Unix(1, 0))
		if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read error = %v; want a deadline error", err)
		}
	})
}

// TestProxyProtocolSlowClient checks on real sockets that a trusted peer
// that never sends its header does not hold up Accept for the next one.
func TestProxyProtocolSlowClient(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewProxyProtocolListener(tcp, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, time.Minute)
	defer ln.Close()

	slow, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slowConn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	slowErr := make(chan error, 1)
	go func() {
		_, err := slowConn.Read(make([]byte, 1))
		slowErr <- err
	}()

	fast, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	if _, err := fast.Write([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nhi")); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	var fastConn net.Conn
	select {
	case fastConn = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("Accept blocked behind a slow client")
	}
	defer fastConn.Close()
	fastConn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(fastConn, buf); err != nil || string(buf) != "hi" {
		t.Errorf("read = %q, %v; want hi", buf, err)
	}
	if r := fastConn.RemoteAddr().String(); r != "1.2.3.4:1" {
		t.Errorf("RemoteAddr = %s; want 1.2.3.4:1", r)
	}

	// Closing the slow conn ends its pending header read.
	slowConn.Close()
	if err := <-slowErr; err == nil {
		t.Error("slow conn read succeeded; want an error")
	}
}

// bytesConn is a conn whose reads come from a byte slice, then io.EOF.
type bytesConn struct {
	net.Conn // nil: only the methods below are called
	r        *bytes.Reader
}

func (c *bytesConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *bytesConn) RemoteAddr() net.Addr             { return trustedPeer }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }
func (c *bytesConn) Close() error                     { return nil }

// readAllProxied runs in through a trusted proxyConn.
func readAllProxied(in []byte) (remote string, data []byte, err error) {
	c := newProxyConn(&bytesConn{r: bytes.NewReader(in)}, time.Second)
	remote = c.RemoteAddr().String()
	data, err = io.ReadAll(c)
	return remote, data, err
}

func FuzzProxyHeader(f *testing.F) {
	for _, c := range proxyCases {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		remote, data, err := readAllProxied(in)
		remote2, data2, err2 := readAllProxied(in)
		if remote != remote2 || !bytes.Equal(data, data2) || (err == nil) != (err2 == nil) {
			t.Fatalf("not deterministic: %s %q %v then %s %q %v", remote, data, err, remote2, data2, err2)
		}
		if err != nil {
			if remote != trustedPeer.String() {
				t.Errorf("RemoteAddr after a failed header = %s; want the peer", remote)
			}
			return
		}
		// The header is a prefix of the input and the rest is the data.
		if !bytes.HasSuffix(in, data) {
			t.Fatalf("data %q is not a suffix of the input %q", data, in)
		}
		hdr := in[:len(in)-len(data)]
		if len(hdr) < len("PROXY UNKNOWN\r\n") {
			t.Fatalf("header %q is too short to be one", hdr)
		}
		if !bytes.HasPrefix(hdr, []byte("PROXY ")) && !bytes.HasPrefix(hdr, v2Signature) {
			t.Fatalf("accepted header %q has no signature", hdr)
		}
		if strings.HasPrefix(string(hdr), "PROXY ") && !bytes.HasSuffix(hdr, []byte("\r\n")) {
			t.Fatalf("accepted v1 header %q does not end in CRLF", hdr)
		}
	})
}
