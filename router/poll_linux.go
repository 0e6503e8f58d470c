package router

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The Linux relay: an idle WebSocket holds two file descriptors and its
// wsConn, and nothing else: no goroutine, no buffer. Both sockets sit in
// one of the Router's epoll sets (one loop each), armed one-shot for reading. When one is readable,
// a loop goroutine reads it with a pooled buffer, writes what it read to
// the peer without blocking and re-arms it: the common case costs no
// goroutine switch. What would block (a peer that cannot take the bytes at
// once, the client's write lock held by a close or ping, the end of a
// direction) is handed, with the buffer, to a pooled worker that blocks
// (poll(2), with relayWriteTimeout); the source is not re-armed meanwhile:
// that is the backpressure, the same as a blocking copy loop.
//
// The sockets are taken out of Go's netpoller (dup, then Close of the
// net.Conn) so that the runtime does not wake for every packet of every
// connection a second time, and so that no netFD or pollDesc is kept.

// relayWriteTimeout bounds a relay write the peer does not take: a peer
// that accepts no byte for this long while we hold data for it is treated
// as gone. Without a bound, a worker would be held forever.
const relayWriteTimeout = time.Minute

// maxIdleWorkers bounds the workers kept parked for the next readiness; a
// burst beyond it gets extra goroutines that exit when done.
const maxIdleWorkers = 64

// pollBufSize is the pooled read buffer: a full one is read again at once.
const pollBufSize = 16 << 10

var pollBufPool = sync.Pool{New: func() any { b := make([]byte, maxFrameHeader+pollBufSize); return &b }}

// pollState is the epoll-mode part of a wsConn.
type pollState struct {
	polled   bool
	poll     *poller
	slotted  bool // has a slot in poll
	cfd, bfd int  // client and backend sockets, owned; valid until closed
	slot     uint32
	gen      uint32
	refs     atomic.Int32 // 1 while open, +1 per worker, timer or close request at work
	pollers  atomic.Int32 // writers waiting in poll(2) for room
	// upState and downState (dirIdle, dirBusy, dirAgain) let one goroutine
	// at a time serve a direction, and tell it when readiness came while it
	// was at work: the sockets are edge-triggered, so that edge is not
	// reported again.
	upState, downState atomic.Int32
	// upHup and downHup record that the peer's end or an error was
	// reported: then a short read does not mean the socket is empty, the
	// end may wait behind the bytes, and no new edge would report it.
	upHup, downHup atomic.Bool
	upDone         bool         // guarded by mu
	downDone       bool         // guarded by mu
	frames         frameTracker // backend → client; owned by the down worker
	holdsWsem      bool         // the down worker holds wsem across reads (mid-frame); its own
	discard        bool         // a close frame went to the client: drop the backend's bytes
	pingT          *time.Timer  // guarded by mu
	idleT          *time.Timer  // guarded by mu
	lingerT        *time.Timer  // guarded by mu
	start          time.Time
	countsConn     bool // holds one of Router.active until finished
}

// poller owns the epoll set and the workers.
type poller struct {
	rt   *Router
	epfd int
	file *os.File // epfd, so that the wait parks in Go's netpoller

	mu    sync.Mutex
	slots []*wsConn
	gens  []uint32
	free  []uint32

	work     chan pollTask
	idle     atomic.Int32
	stop     chan struct{}
	loopDone chan struct{}
	wg       sync.WaitGroup // workers
}

// pollTask is work the loop hands to a worker because it would block. It
// carries the buffer and one reference to the session.
type pollTask struct {
	c    *wsConn
	up   bool // the client socket (client → backend)
	kind taskKind
	bp   *[]byte
	n    int    // taskForward: bytes read into the buffer
	rest []byte // taskWrite: bytes still to write, in the buffer
	err  error  // taskEnd: why the direction ended; taskWrite: a header error after rest
}

type taskKind uint8

const (
	taskForward taskKind = iota // forward n bytes read from the backend
	taskWrite                   // write rest to the peer
	taskEnd                     // end the direction
)

// Direction states. The sockets are registered edge-triggered, once: a
// readiness finds its direction idle and serves it, or busy and marks it
// to be read again by whoever serves it. An ended direction stays busy.
// This saves the epoll_ctl that re-arming a one-shot registration costs
// after every read.
const (
	dirIdle int32 = iota
	dirBusy
	dirAgain // busy, and readiness came meanwhile
)

// errWouldBlock reports a write that could not finish without blocking.
var errWouldBlock = errors.New("would block")

// pollLoops is the number of epoll loops: one per P, so that the
// readiness of many sessions is served in parallel rather than queued
// behind one goroutine.
func pollLoops() int { return runtime.GOMAXPROCS(0) }

// newPollers starts n loops, each with its own epoll set and workers;
// sessions are spread over them round robin.
func newPollers(rt *Router, n int) ([]*poller, error) {
	ps := make([]*poller, 0, n)
	for range n {
		p, err := newPoller(rt)
		if err != nil {
			for _, p := range ps {
				p.close()
			}
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func newPoller(rt *Router) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll create: %w", err)
	}
	// Non-blocking, so os.NewFile registers it with the runtime poller:
	// the loop waits for the epoll set to become readable without holding
	// a thread, and Close wakes it.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll set nonblock: %w", err)
	}
	p := &poller{
		rt:       rt,
		epfd:     epfd,
		file:     os.NewFile(uintptr(epfd), "epoll"),
		work:     make(chan pollTask),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go p.loop()
	return p, nil
}

// close stops the loop and the workers. The caller has ended every session.
func (p *poller) close() {
	p.file.Close()
	<-p.loopDone
	close(p.stop)
	p.wg.Wait()
}

// loop waits for readiness and hands each to a worker.
func (p *poller) loop() {
	defer close(p.loopDone)
	rc, err := p.file.SyscallConn()
	if err != nil {
		return
	}
	events := make([]unix.EpollEvent, 128)
	for {
		var n int
		var werr error
		err := rc.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			// Nothing ready: park until the epoll fd is readable.
			return n > 0 || (werr != nil && werr != unix.EINTR)
		})
		if err != nil || werr != nil {
			return // closed
		}
		for _, ev := range events[:n] {
			slot, tag := uint32(ev.Fd), uint32(ev.Pad)
			p.mu.Lock()
			var c *wsConn
			if int(slot) < len(p.slots) && p.gens[slot] == tag>>1 {
				c = p.slots[slot]
			}
			p.mu.Unlock()
			if c != nil {
				c.ready(tag&1 == 1, ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
			}
		}
	}
}

// dispatch gives t to a parked worker, or to a new one if none is parked.
func (p *poller) dispatch(t pollTask) {
	select {
	case p.work <- t:
	default:
		p.wg.Go(func() { p.worker(t) })
	}
}

func (p *poller) worker(t pollTask) {
	for {
		t.c.resume(t)
		if p.idle.Add(1) > maxIdleWorkers {
			p.idle.Add(-1)
			return
		}
		select {
		case t = <-p.work:
			p.idle.Add(-1)
		case <-p.stop:
			p.idle.Add(-1)
			return
		}
	}
}

// add registers c's sockets, armed for their first readiness (one that
// has ended early stays unarmed).
func (p *poller) add(c *wsConn) error {
	p.mu.Lock()
	var slot uint32
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		slot = uint32(len(p.slots))
		p.slots = append(p.slots, nil)
		p.gens = append(p.gens, 0)
	}
	p.gens[slot]++
	p.slots[slot] = c
	c.slot, c.gen = slot, p.gens[slot]
	c.slotted = true
	p.mu.Unlock()
	c.mu.RLock()
	if c.upDone {
		c.upState.Store(dirBusy) // for good
	}
	if c.downDone {
		c.downState.Store(dirBusy)
	}
	c.mu.RUnlock()
	for _, s := range []struct {
		fd int
		up uint32
	}{{c.cfd, 1}, {c.bfd, 0}} {
		// Readiness that is there already is reported once added.
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(slot), Pad: int32(c.gen<<1 | s.up)}
		if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
			p.remove(c)
			return fmt.Errorf("epoll add: %w", err)
		}
	}
	return nil
}

// remove frees c's slot; events still in flight for it are ignored.
func (p *poller) remove(c *wsConn) {
	p.mu.Lock()
	if p.slots[c.slot] == c {
		p.slots[c.slot] = nil
		p.gens[c.slot]++
		p.free = append(p.free, c.slot)
	}
	c.slotted = false
	p.mu.Unlock()
}

func (c *wsConn) dirState(up bool) *atomic.Int32 {
	if up {
		return &c.upState
	}
	return &c.downState
}

func (c *wsConn) hupFlag(up bool) *atomic.Bool {
	if up {
		return &c.upHup
	}
	return &c.downHup
}

// ready serves a readiness of one direction on the loop goroutine, or
// leaves a note for the goroutine serving it already.
func (c *wsConn) ready(up, hup bool) {
	if hup {
		c.hupFlag(up).Store(true)
	}
	st := c.dirState(up)
	for {
		switch st.Load() {
		case dirIdle:
			if st.CompareAndSwap(dirIdle, dirBusy) {
				c.pump(up)
				return
			}
		case dirBusy:
			if st.CompareAndSwap(dirBusy, dirAgain) {
				return
			}
		default:
			return
		}
	}
}

// release ends the serving of a direction. It reports true, keeping the
// direction busy, when readiness came meanwhile: the caller reads again.
func (c *wsConn) release(up bool) bool {
	st := c.dirState(up)
	if st.CompareAndSwap(dirBusy, dirIdle) {
		return false
	}
	st.Store(dirBusy) // it was dirAgain
	return true
}

// socketFD returns a non-blocking duplicate of conn's socket. ok is false
// when conn is not a plain socket. Wrappers are looked through when they
// say how (NetConn, as crypto/tls does) and hold no byte back.
func socketFD(conn net.Conn) (int, bool) {
unwrap:
	for range 8 {
		switch w := conn.(type) {
		case *proxyConn:
			inner, ok := w.unwrap()
			if !ok {
				return -1, false
			}
			conn = inner
		case interface{ NetConn() net.Conn }:
			conn = w.NetConn()
		default:
			break unwrap
		}
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return -1, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, false
	}
	nfd := -1
	if err := rc.Control(func(fd uintptr) {
		// The duplicate shares the file status, so it is non-blocking.
		nfd, _ = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil || nfd < 0 {
		return -1, false
	}
	return nfd, true
}

// adopt moves c into epoll mode: early bytes are relayed, both sockets
// registered and armed, and the session then ends on its own (unref). It
// reports false, with c untouched, when the sockets cannot be taken; the
// caller then relays with goroutines.
func (rt *Router) adopt(c *wsConn) bool {
	rt.mu.Lock()
	if rt.polls == nil && !rt.closed && !rt.pollFailed {
		ps, err := newPollers(rt, pollLoops())
		if err != nil {
			rt.pollFailed = true
			rt.log.Warn().Err(err).Msg("epoll relay unavailable, using goroutines")
		}
		rt.polls = ps
	}
	ps := rt.polls
	rt.mu.Unlock()
	if len(ps) == 0 {
		return false
	}
	p := ps[rt.nextPoll.Add(1)%uint32(len(ps))]
	cfd, ok := socketFD(c.client)
	if !ok {
		return false
	}
	bfd, ok := socketFD(c.backend)
	if !ok {
		unix.Close(cfd)
		return false
	}
	// Closing the originals takes them out of Go's netpoller; the sockets
	// stay open through the duplicates, so no FIN is sent.
	c.client.Close()
	c.backend.Close()
	c.mu.Lock()
	c.cfd, c.bfd, c.poll = cfd, bfd, p
	c.polled = true
	c.refs.Store(2) // the session's own, and this setup's
	c.start = time.Now()
	closed := c.closed
	if closed {
		c.closeFDs() // hardClose ran before the sockets were ours
	}
	c.mu.Unlock()
	defer c.unref()
	if closed {
		c.unref()
		return true
	}

	// Bytes that came with the handshakes, before epoll could see them.
	if len(c.clientBuf) > 0 {
		c.bytesIn.Add(int64(len(c.clientBuf)))
		if _, err := c.writeFD(c.bfd, c.clientBuf, true); err != nil {
			c.hardClose()
			return true
		}
		c.clientBuf = nil
	}
	if n := c.backendBr.Buffered(); n > 0 {
		bp := pollBufPool.Get().(*[]byte)
		buf := *bp
		for n > 0 {
			k, _ := c.backendBr.Read(buf[maxFrameHeader:])
			if next := c.forwardDown(buf, k, true); next != nil {
				c.endDirection(false, next.err)
				break
			}
			n -= k
		}
		pollBufPool.Put(bp)
	}
	c.backendBr.Reset(nil)
	handshakeReaders.Put(c.backendBr)
	c.backendBr = nil
	if err := p.add(c); err != nil {
		rt.log.Debug().Err(err).Uint64("ws", c.id).Msg("websocket relay setup")
		c.hardClose()
		return true
	}
	c.mu.Lock()
	if d := rt.cfg.WSPingInterval; d > 0 {
		c.pingT = time.AfterFunc(d, c.onPing)
	}
	if d := rt.cfg.WSIdleTimeout; d > 0 {
		c.idleT = time.AfterFunc(d, c.onIdle)
	}
	c.mu.Unlock()
	return true
}

// tryRef takes a reference unless the session has ended.
func (c *wsConn) tryRef() bool {
	for {
		n := c.refs.Load()
		if n <= 0 {
			return false
		}
		if c.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// unref drops a reference; the last one ends the session.
func (c *wsConn) unref() {
	if c.refs.Add(-1) != 0 {
		return
	}
	if c.slotted {
		c.poll.remove(c)
	}
	if c.countsConn {
		c.rt.active.Add(-1)
	}
	c.finish()
	c.rt.log.Debug().Uint64("ws", c.id).Str("backend", c.backendID).Dur("duration", time.Since(c.start)).
		Int64("bytes_in", c.bytesIn.Load()).Int64("bytes_out", c.bytesOut.Load()).
		Msg("websocket closed")
	c.rt.wg.Done() // last: Close waits for it
}

// closeFDs closes both sockets. A worker waiting in poll(2) on one is
// woken by shutdown(2) first (close alone does not wake a poll); without
// one, that is two system calls per session saved. The caller holds mu
// for writing.
func (c *wsConn) closeFDs() {
	wake := c.pollers.Load() > 0
	for _, fd := range []int{c.cfd, c.bfd} {
		if wake {
			_ = unix.Shutdown(fd, unix.SHUT_RDWR)
		}
		_ = unix.Close(fd)
	}
	for _, t := range []*time.Timer{c.pingT, c.idleT, c.lingerT} {
		if t != nil {
			t.Stop()
		}
	}
}

// pump serves a direction that the caller made busy, without blocking:
// it reads and writes until the socket has nothing more, then releases the
// direction. Anything that would block goes to a worker with the buffer
// and pump's reference; the direction stays busy meanwhile.
func (c *wsConn) pump(up bool) {
	if !c.tryRef() {
		return
	}
	bp := pollBufPool.Get().(*[]byte)
	buf := *bp
	for {
		var next *pollTask
		full, empty := false, false
		if up {
			n, err := c.readFD(c.cfd, buf)
			switch {
			case n > 0:
				full = n == len(buf)
				c.touch()
				c.bytesIn.Add(int64(n))
				if w, werr := c.writeFD(c.bfd, buf[:n], false); werr == errWouldBlock {
					next = &pollTask{kind: taskWrite, rest: buf[w:n]}
				} else if werr != nil {
					next = &pollTask{kind: taskEnd, err: werr}
				}
			case err == unix.EAGAIN:
				empty = true
			case err != nil:
				next = &pollTask{kind: taskEnd, err: err}
			default:
				next = &pollTask{kind: taskEnd, err: io.EOF}
			}
		} else {
			n, err := c.readFD(c.bfd, buf[maxFrameHeader:])
			switch {
			case n > 0:
				full = n == len(buf)-maxFrameHeader
				c.touch()
				next = c.forwardDown(buf, n, false)
			case err == unix.EAGAIN:
				empty = true
			case err != nil:
				next = &pollTask{kind: taskEnd, err: err}
			default:
				next = &pollTask{kind: taskEnd, err: io.EOF}
			}
		}
		if next != nil && next.kind == taskEnd && c.endsWithoutBlocking(up) {
			c.endDirection(up, next.err)
			break
		}
		if next != nil {
			next.c, next.up, next.bp = c, up, bp
			c.poll.dispatch(*next)
			return
		}
		// A short read emptied the socket; what arrives later is a new
		// edge. A full one may have left bytes that no edge will report,
		// and so may any read once the end was reported.
		if (empty || !full && !c.hupFlag(up).Load()) && !c.release(up) {
			break
		}
	}
	pollBufPool.Put(bp)
	c.unref()
}

// endsWithoutBlocking reports whether ending the direction cannot block,
// so that the loop may do it itself rather than wake a worker: the client
// → backend end only half-closes the backend, and so does the backend →
// client end once the client has ended too (no close frame to write).
func (c *wsConn) endsWithoutBlocking(up bool) bool {
	if up {
		return true
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.upDone
}

// resume finishes on a worker what pump could not without blocking, then
// releases the direction, or serves it on if readiness came meanwhile.
func (c *wsConn) resume(t pollTask) {
	defer c.unref()
	defer pollBufPool.Put(t.bp)
	var next *pollTask
	switch t.kind {
	case taskEnd:
		c.endDirection(t.up, t.err)
		return
	case taskForward:
		next = c.forwardDown(*t.bp, t.n, true)
	case taskWrite:
		if t.up {
			if _, err := c.writeFD(c.bfd, t.rest, true); err != nil {
				c.endDirection(true, err)
				return
			}
		} else {
			next = c.finishDown(t.rest, t.err, true)
		}
	}
	if next != nil {
		if next.kind == taskEnd {
			c.endDirection(t.up, next.err)
		}
		return
	}
	// Still busy: the last read may have left bytes, and those that came
	// meanwhile were reported only as a note. pump reads until the socket
	// is empty and releases the direction.
	c.pump(t.up)
}

// forwardDown passes on n backend bytes read into buf at maxFrameHeader
// (the header bytes carried from the last read go right before them): whole frames, and a frame's start whose payload
// continues later (then wsem stays held, so nothing is written inside
// it). Unless block is set it does not wait, and returns the rest of the
// work instead; nil means done and the direction stays open.
func (c *wsConn) forwardDown(buf []byte, n int, block bool) *pollTask {
	if c.discard {
		return nil
	}
	if !c.holdsWsem {
		if block {
			c.wsem <- struct{}{}
		} else {
			select {
			case c.wsem <- struct{}{}:
			default: // a close or ping is being written
				return &pollTask{kind: taskForward, n: n}
			}
		}
		c.holdsWsem = true
		if c.closeSent {
			// The node closed: nothing may follow its close frame.
			c.discard = true
			c.releaseWsem()
			return nil
		}
	}
	start := maxFrameHeader - c.frames.carry(buf[:maxFrameHeader])
	data := buf[start : maxFrameHeader+n]
	k, closed, perr := c.frames.advance(data)
	if closed {
		c.closeSent = true
		c.discard = true
	}
	c.bytesOut.Add(int64(k))
	return c.finishDown(data[:k], perr, block)
}

// finishDown writes p, frames or their start, to the client and releases
// wsem at a frame boundary. perr, a bad header after p, ends the
// direction once p is written.
func (c *wsConn) finishDown(p []byte, perr error, block bool) *pollTask {
	w, err := c.writeFD(c.cfd, p, block)
	if err == errWouldBlock {
		return &pollTask{kind: taskWrite, rest: p[w:], err: perr}
	}
	if err != nil {
		c.closeSent = true // a frame may be cut: no close frame may follow
		c.releaseWsem()
		return &pollTask{kind: taskEnd, err: err}
	}
	if !c.frames.midFrame() {
		c.releaseWsem()
	}
	if perr != nil {
		return &pollTask{kind: taskEnd, err: perr}
	}
	return nil
}

func (c *wsConn) releaseWsem() {
	if c.holdsWsem {
		c.holdsWsem = false
		<-c.wsem
	}
}

// endDirection handles the end of one direction as the goroutine relay
// does: client → backend half-closes the backend; backend → client sends
// CloseBadGateway unless the client is gone or closed already, and
// half-closes the client. When both have ended the session closes;
// otherwise it lingers for the close timeout at most.
func (c *wsConn) endDirection(up bool, err error) {
	if !up && c.holdsWsem {
		c.closeSent = true // the backend broke off inside a frame
		c.releaseWsem()
	}
	c.mu.Lock()
	if up {
		c.upDone = true
	} else {
		c.downDone = true
	}
	both, clientOpen := c.upDone && c.downDone, !c.upDone
	c.mu.Unlock()
	if up {
		c.shutdownWrite(c.bfd)
	} else {
		if clientOpen {
			c.inject(CloseBadGateway, "backend connection lost")
		}
		if err != nil && !errors.Is(err, io.EOF) {
			c.rt.log.Debug().Uint64("ws", c.id).Err(err).Msg("websocket backend read")
		}
		c.shutdownWrite(c.cfd)
	}
	if both {
		c.hardClose()
		return
	}
	c.startLinger()
}

func (c *wsConn) shutdownWrite(fd int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.closed {
		_ = unix.Shutdown(fd, unix.SHUT_WR)
	}
}

// startLinger closes the session hard after the close timeout, once.
func (c *wsConn) startLinger() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lingerT == nil && !c.closed {
		c.lingerT = time.AfterFunc(c.rt.closeTimeout, c.hardClose)
	}
}

func (c *wsConn) onPing() {
	if !c.tryRef() {
		return
	}
	defer c.unref()
	c.ping()
	c.mu.Lock()
	if !c.closed {
		c.pingT.Reset(c.rt.cfg.WSPingInterval)
	}
	c.mu.Unlock()
}

func (c *wsConn) onIdle() {
	if !c.tryRef() {
		return
	}
	defer c.unref()
	d := c.rt.cfg.WSIdleTimeout
	if since := time.Since(time.Unix(0, c.lastActive.Load())); since < d {
		c.mu.Lock()
		if !c.closed {
			c.idleT.Reset(d - since)
		}
		c.mu.Unlock()
		return
	}
	c.inject(CloseGoingAway, "idle timeout")
	c.startLinger()
}

// requestClosePolled is requestClose in epoll mode: there is no
// supervisor goroutine to ask, so a short-lived one does it.
func (c *wsConn) requestClosePolled(code uint16) {
	if !c.tryRef() {
		return
	}
	go func() {
		defer c.unref()
		c.inject(code, "node draining")
		c.startLinger()
	}()
}

// readFD reads from one of c's sockets without blocking.
func (c *wsConn) readFD(fd int, p []byte) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	for {
		n, err := unix.Read(fd, p)
		if err == unix.EINTR {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}

// writeFD writes p to one of c's sockets and returns how much it wrote.
// Unless block is set it stops with errWouldBlock where the socket is
// full; with block it waits for room in poll(2), for at most
// relayWriteTimeout without progress (the close timeout for the node's
// own frames, see writeClient).
func (c *wsConn) writeFD(fd int, p []byte, block bool) (int, error) {
	return c.writeFDTimeout(fd, p, block, relayWriteTimeout)
}

func (c *wsConn) writeFDTimeout(fd int, p []byte, block bool, timeout time.Duration) (int, error) {
	var deadline time.Time
	written := 0
	for written < len(p) {
		c.mu.RLock()
		if c.closed {
			c.mu.RUnlock()
			return written, net.ErrClosed
		}
		n, err := unix.Write(fd, p[written:])
		polls := err == unix.EAGAIN && block
		if polls {
			// Counted before the lock is let go: closeFDs, which takes it,
			// then knows to wake this writer.
			c.pollers.Add(1)
		}
		c.mu.RUnlock()
		if n > 0 {
			written += n
			deadline = time.Time{}
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		case nil:
			return written, io.ErrShortWrite
		default:
			return written, err
		}
		if !block {
			return written, errWouldBlock
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(timeout)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			c.pollers.Add(-1)
			return written, os.ErrDeadlineExceeded
		}
		// Outside the lock, so hardClose is not held up; its shutdown(2)
		// wakes this poll. Slices of a second bound the wait should the fd
		// be closed before poll starts.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		_, _ = unix.Poll(fds, int(min(wait, time.Second)/time.Millisecond)+1)
		c.pollers.Add(-1)
	}
	return written, nil
}
