package router

import (
	"crypto/tls"
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

	"github.com/meshlb/meshlb/internal/parkpool"
)

// The Linux relay: an idle WebSocket holds two file descriptors and its
// wsConn, and nothing else: no goroutine, no buffer. Both sockets sit in
// one of the Router's epoll sets (one loop per P), registered once,
// edge-triggered, for reading and writing. When one is readable, the loop
// goroutine reads it with a pooled buffer and writes what it read to the
// peer without blocking: the common case costs no goroutine switch.
//
// No goroutine ever blocks in a system call on a peer: a blocking call
// holds an OS thread, and 600 sessions whose peers stopped reading once
// took a node to 1,199 threads. When the peer cannot take all the bytes,
// the direction parks: the unwritten bytes stay in the read buffer (one
// per parked direction, at most pollBufSize), the source is not read
// meanwhile (the backpressure of a blocking copy loop), and the loop
// resumes the direction when the peer's socket reports EPOLLOUT. A sweep
// per loop closes a session whose peer has taken no byte for
// Config.WSWriteTimeout. What must wait for something other than a
// socket (the client's write lock, held by a close frame or a ping being
// written) goes to a pooled worker, which waits on a channel, never in
// the kernel.
//
// The sockets are taken out of Go's netpoller (dup, then Close of the
// net.Conn) so that the runtime does not wake for every packet of every
// connection a second time, and so that no netFD or pollDesc is kept.

// maxIdleWorkers bounds the workers kept parked for the next hand-off; a
// burst beyond it gets extra goroutines that exit when done, and the
// parked ones a whole trim period does not need exit too (parkpool).
const maxIdleWorkers = 64

// pollBufSize is the pooled read buffer: a full one is read again at once.
const pollBufSize = 16 << 10

// pollBuf is a direction's read buffer. It is taken from the pool for one
// readiness and kept past it only while the direction is parked.
type pollBuf struct {
	b    [maxFrameHeader + pollBufSize]byte
	rest []byte // parked: the bytes of b the peer has not taken yet
	perr error  // parked backend → client: a bad header after rest
}

var pollBufPool = sync.Pool{New: func() any { return new(pollBuf) }}

func getPollBuf() *pollBuf {
	if n := pollBufsOut.Add(1); n > pollBufsPeak.Load() {
		pollBufsPeak.Store(n) // a lost race only lowers the peak a little
	}
	return pollBufPool.Get().(*pollBuf)
}

func putPollBuf(pb *pollBuf) {
	pb.rest, pb.perr = nil, nil
	pollBufPool.Put(pb)
	pollBufsOut.Add(-1)
}

// Park states of a direction (pollState.upPark, downPark). Any value above
// parkWoken means parked, and is the time (nowNano) of the last write the
// peer took.
const (
	parkNone  int64 = 0
	parkWoken int64 = 1 // the peer became writable while the direction was not parked
)

// pollState is the epoll-mode part of a wsConn.
type pollState struct {
	polled    bool
	slotted   bool // has a slot in poll
	upDone    bool // guarded by mu
	downDone  bool // guarded by mu
	timedOut  bool // guarded by mu: the write timeout fired
	holdsWsem bool // the down direction holds wsem across reads (mid-frame, or parked); its own
	discard   bool // a close frame went to the client: drop the backend's bytes
	cfd, bfd  int  // client and backend sockets, owned; valid until closed
	slot      uint32
	gen       uint32
	refs      atomic.Int32 // 1 while open, +1 per direction at work or parked, timer or close request
	// upState and downState (dirIdle, dirBusy, dirAgain) let one goroutine
	// at a time serve a direction, and tell it when readiness came while it
	// was at work: the sockets are edge-triggered, so that edge is not
	// reported again.
	upState, downState atomic.Int32
	// upHup and downHup record that the peer's end or an error was
	// reported: then a short read does not mean the socket is empty, the
	// end may wait behind the bytes, and no new edge would report it.
	upHup, downHup atomic.Bool
	// upPark and downPark hand a parked direction, with its buffer
	// (upBuf, downBuf) and reference, to whoever takes it by CAS: the loop
	// on EPOLLOUT, hardClose, or nobody.
	upPark, downPark atomic.Int64
	upBuf, downBuf   *pollBuf
	poll             *poller
	frames           frameTracker // backend → client; owned by the down direction
	pingT            *time.Timer  // guarded by mu
	idleT            *time.Timer  // guarded by mu
	lingerT          *time.Timer  // guarded by mu
	start            time.Time
}

// poller owns the epoll set, the workers and the write-timeout sweep.
type poller struct {
	rt   *Router
	epfd int
	file *os.File // epfd, so that the wait parks in Go's netpoller

	mu    sync.Mutex
	slots []*wsConn
	gens  []uint32
	free  []uint32

	workers  *parkpool.Pool[pollTask]
	stop     chan struct{}
	loopDone chan struct{}
	wg       sync.WaitGroup // workers, their trim and the sweep
}

// pollTask is work the loop hands to a worker because it would wait. It
// carries the buffer and one reference to the session.
type pollTask struct {
	c    *wsConn
	up   bool // the client socket (client → backend)
	kind taskKind
	pb   *pollBuf
	n    int   // taskForward: bytes read into the buffer
	err  error // taskEnd: why the direction ended
}

type taskKind uint8

const (
	taskForward taskKind = iota // forward n bytes read from the backend once wsem is free
	taskEnd                     // end the direction
)

// step is the outcome of forwarding one piece.
type step uint8

const (
	stepOn   step = iota // done: read on
	stepPark             // the peer is full: pb.rest is still to write
	stepWait             // backend → client: wsem is taken (a close or ping is being written)
	stepEnd              // the direction ended
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

// monoStart anchors nowNano on the monotonic clock, so that a step of the
// wall clock neither fires nor holds off the write timeout.
var monoStart = time.Now()

// nowNano is a monotonic time in nanoseconds, always above parkWoken.
func nowNano() int64 { return max(int64(time.Since(monoStart)), parkWoken+1) }

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
		workers:  parkpool.New[pollTask](maxIdleWorkers),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go p.loop()
	p.wg.Go(func() { p.workers.Run(p.stop) })
	p.wg.Go(func() { p.sweep(rt) })
	return p, nil
}

// close stops the loop, the workers and the sweep. The caller has ended
// every session.
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
	conns := make([]*wsConn, len(events))
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
		// One lock for the batch, not one per event: under load a wait
		// returns dozens of events, and the sweep contends for p.mu.
		p.mu.Lock()
		for i, ev := range events[:n] {
			slot, tag := uint32(ev.Fd), uint32(ev.Pad)
			if int(slot) < len(p.slots) && p.gens[slot] == tag>>1 {
				conns[i] = p.slots[slot]
			}
		}
		p.mu.Unlock()
		for i, ev := range events[:n] {
			c := conns[i]
			conns[i] = nil // no session is kept alive by the loop
			if c == nil {
				continue
			}
			tag := uint32(ev.Pad)
			client := tag&1 == 1
			// Room on a socket is for the direction that writes to it;
			// an error or hang-up wakes that writer too, to see it.
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.writable(!client)
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.ready(client, ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
			}
		}
	}
}

// dispatch gives t to a parked worker, or to a new one if none is parked.
func (p *poller) dispatch(t pollTask) {
	if !p.workers.Offer(t) {
		p.wg.Go(func() { p.worker(t) })
	}
}

func (p *poller) worker(t pollTask) {
	for ok := true; ok; t, ok = p.workers.Park(p.stop) {
		t.c.resume(t)
	}
}

// sweep closes, every quarter of the write timeout (at most a second
// apart), the sessions with a direction parked for longer than d: one
// ticker per loop rather than a timer per session.
// The write timeout in force is read each tick: a reload changes it for
// every session.
func (p *poller) sweep(rt *Router) {
	tick := func(d time.Duration) time.Duration { return min(max(d/4, 5*time.Millisecond), time.Second) }
	d := rt.tunables().WSWriteTimeout
	t := time.NewTicker(tick(d))
	defer t.Stop()
	var late []*wsConn
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		if nd := rt.tunables().WSWriteTimeout; nd != d {
			d = nd
			t.Reset(tick(d))
		}
		cutoff := nowNano() - int64(d)
		p.mu.Lock()
		for _, c := range p.slots {
			if c != nil && (parkedBefore(c.upPark.Load(), cutoff) || parkedBefore(c.downPark.Load(), cutoff)) && c.tryRef() {
				late = append(late, c)
			}
		}
		p.mu.Unlock()
		for i, c := range late {
			c.writeTimedOut(cutoff)
			c.unref()
			late[i] = nil
		}
		late = late[:0]
		releaseBuffers(&rt.log, time.Now())
	}
}

// parkedBefore reports whether park state s is parked since before cutoff.
func parkedBefore(s, cutoff int64) bool { return s > parkWoken && s < cutoff }

// add registers c's sockets, for reading and writing, edge-triggered
// (one direction that has ended early stays busy for good).
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
		// EPOLLOUT costs nothing until a write finds the socket full:
		// only then does the kernel report room.
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(slot), Pad: int32(c.gen<<1 | s.up)}
		if err := rawEpollCtl(p.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
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
// say how (NetConn) and hold no byte back; a *tls.Conn, whose bytes on
// the socket are not the bytes relayed, is not a plain socket.
func socketFD(conn net.Conn) (int, bool) {
unwrap:
	for range 8 {
		switch w := conn.(type) {
		case *tls.Conn:
			// Its NetConn is the ciphertext: relaying it would hand
			// the backend TLS records. TLS is relayed by goroutines.
			return -1, false
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
// registered, and the session then ends on its own (unref). It reports
// false, with c untouched, when the sockets cannot be taken; the caller
// then relays with goroutines.
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
	// Bytes that came with the handshakes, before epoll could see them,
	// go out through the net.Conns while they are open: the runtime poller
	// waits for room there without holding a thread.
	downErr, err := c.relayEarly()
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
	if err != nil {
		c.rt.log.Debug().Uint64("ws", c.id).Err(err).Msg("websocket early bytes")
		c.hardClose()
		return true
	}
	if downErr != nil {
		c.endDirection(false, downErr)
	}
	if err := p.add(c); err != nil {
		rt.log.Debug().Err(err).Uint64("ws", c.id).Msg("websocket relay setup")
		c.hardClose()
		return true
	}
	c.mu.Lock()
	if d := rt.tunables().WSPingInterval; d > 0 {
		c.pingT = time.AfterFunc(d, c.onPing)
	}
	if d := rt.tunables().WSIdleTimeout; d > 0 {
		c.idleT = time.AfterFunc(d, c.onIdle)
	}
	c.mu.Unlock()
	return true
}

// relayEarly passes on the bytes read with the handshakes: the client's
// after its request, the backend's after its 101 (whole frames; a
// frame's start leaves wsem held, as forwardDown does). It runs before
// the session is polled, with the net.Conns, so nothing else writes.
// downErr is a bad backend header after the frames written; err ends
// the session.
func (c *wsConn) relayEarly() (downErr, err error) {
	if len(c.clientBuf) > 0 {
		if err := c.upFrames.check(c.clientBuf, c.rt.tunables().WSMaxFrameSize); err != nil {
			c.refuseClient(err)
			return nil, err
		}
		c.noteClientClose()
		c.bytesIn.Add(int64(len(c.clientBuf)))
		_ = c.backend.SetWriteDeadline(time.Now().Add(c.rt.closeTimeout))
		if _, err := c.backend.Write(c.clientBuf); err != nil {
			return nil, err
		}
		c.clientBuf = nil
	}
	br := c.backendBr
	if n := br.Buffered(); n > 0 {
		data, _ := br.Peek(n)
		k, closed, perr := c.frames.advance(data)
		if closed {
			c.closeSent = true
			c.discard = true
			c.noteClose(closerBackend, c.frames.closeCode())
		}
		c.bytesOut.Add(int64(k))
		_ = c.client.SetWriteDeadline(time.Now().Add(c.rt.closeTimeout))
		if _, err := c.client.Write(data[:k]); err != nil {
			return nil, err
		}
		if c.frames.midFrame() {
			c.wsem <- struct{}{} // free: nothing else writes yet
			c.holdsWsem = true
		}
		downErr = perr
	}
	br.Reset(nil)
	handshakeReaders.Put(br)
	c.backendBr = nil
	return downErr, nil
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
	c.rt.active.Add(-1) // ServeHTTP's, which a detached session keeps
	if c.ipSlot.IsValid() {
		c.rt.limits.release(c.ipSlot)
	}
	c.finish()
	c.rt.log.Debug().Uint64("ws", c.id).Str("backend", c.backendID).Dur("duration", time.Since(c.start)).
		Int64("bytes_in", c.bytesIn.Load()).Int64("bytes_out", c.bytesOut.Load()).
		Msg("websocket closed")
	c.rt.wg.Done() // last: Close waits for it
}

// closeFDs closes both sockets and stops the timers. Nothing waits in the
// kernel on them (writes never block), so close alone is enough. The
// caller holds mu for writing; the parked directions are let go after
// (dropParked).
func (c *wsConn) closeFDs() {
	_ = rawClose(c.cfd)
	_ = rawClose(c.bfd)
	for _, t := range []*time.Timer{c.pingT, c.idleT, c.lingerT} {
		if t != nil {
			t.Stop()
		}
	}
}

func (c *wsConn) parkState(up bool) *atomic.Int64 {
	if up {
		return &c.upPark
	}
	return &c.downPark
}

func (c *wsConn) parkedBuf(up bool) **pollBuf {
	if up {
		return &c.upBuf
	}
	return &c.downBuf
}

// park leaves the direction waiting, with pb (pb.rest unwritten) and its
// reference, for the peer's socket to report room; since is the time of
// the peer's last progress. It reports false when the caller must write
// again: room was reported while it was at work (that edge is not
// reported twice), or the session closed meanwhile (the write then says
// so).
func (c *wsConn) park(up bool, pb *pollBuf, since int64) bool {
	st := c.parkState(up)
	*c.parkedBuf(up) = pb // published by the CAS
	if !st.CompareAndSwap(parkNone, since) {
		*c.parkedBuf(up) = nil
		st.Store(parkNone) // it was parkWoken
		return false
	}
	// hardClose sets closed before it takes parked directions: if it has
	// not seen this one, closed shows here.
	c.mu.RLock()
	closed := c.closed
	c.mu.RUnlock()
	if closed && st.CompareAndSwap(since, parkNone) {
		*c.parkedBuf(up) = nil
		return false
	}
	return true
}

// unpark takes the direction if it is parked, with its buffer and
// reference. Otherwise it leaves a note that room came, for an owner
// about to park.
func (c *wsConn) unpark(up bool, note bool) (pb *pollBuf, since int64) {
	st := c.parkState(up)
	for {
		s := st.Load()
		switch {
		case s > parkWoken:
			if st.CompareAndSwap(s, parkNone) {
				pb = *c.parkedBuf(up)
				*c.parkedBuf(up) = nil
				return pb, s
			}
		case s == parkNone && note:
			if st.CompareAndSwap(parkNone, parkWoken) {
				return nil, 0
			}
		default:
			return nil, 0
		}
	}
}

// writable serves room reported on the socket direction up writes to.
func (c *wsConn) writable(up bool) {
	pb, since := c.unpark(up, true)
	if pb == nil {
		return
	}
	st, progressed, err := c.flush(up, pb)
	if progressed {
		since = nowNano()
	}
	if c.settle(up, pb, st, err, since, false) {
		c.serve(up, pb)
	}
}

// dropParked lets go of a parked direction of a closed session.
func (c *wsConn) dropParked(up bool) {
	pb, _ := c.unpark(up, false)
	if pb == nil {
		return
	}
	if !up {
		c.closeSent = true // the client may have part of a frame
		c.releaseWsem()
	}
	putPollBuf(pb)
	c.unref()
}

// pump serves a direction that the caller made busy.
func (c *wsConn) pump(up bool) {
	if !c.tryRef() {
		return
	}
	c.serve(up, getPollBuf())
}

// serve reads and forwards, without blocking, for a direction the caller
// owns with pb and a reference, until the socket has nothing more: then it
// releases the direction, pb and the reference. A direction that parks,
// waits for a worker or ends passes them on instead (settle).
func (c *wsConn) serve(up bool, pb *pollBuf) {
	for {
		full, empty := false, false
		st, err := stepOn, error(nil)
		if up {
			n, rerr := c.readFD(c.cfd, pb.b[:])
			switch {
			case n > 0:
				full = n == len(pb.b)
				c.touch()
				c.bytesIn.Add(int64(n))
				st, err = c.forwardUp(pb, n)
			case rerr == unix.EAGAIN:
				empty = true
			case rerr != nil:
				st, err = stepEnd, rerr
			default:
				st, err = stepEnd, io.EOF
			}
		} else {
			n, rerr := c.readFD(c.bfd, pb.b[maxFrameHeader:])
			switch {
			case n > 0:
				full = n == pollBufSize
				c.touch()
				st, err = c.forwardDown(pb, n, false)
			case rerr == unix.EAGAIN:
				empty = true
			case rerr != nil:
				st, err = stepEnd, rerr
			default:
				st, err = stepEnd, io.EOF
			}
		}
		if st != stepOn {
			if !c.settle(up, pb, st, err, nowNano(), false) {
				return
			}
			continue
		}
		// A short read emptied the socket; what arrives later is a new
		// edge. A full one may have left bytes that no edge will report,
		// and so may any read once the end was reported.
		if (empty || !full && !c.hupFlag(up).Load()) && !c.release(up) {
			break
		}
	}
	putPollBuf(pb)
	c.unref()
}

// settle deals with a step other than stepOn, for the owner of the
// direction (pb and a reference). It reports true when the owner reads
// on (the bytes were written after all); otherwise pb and the reference
// are parked, given to a worker, or let go. onWorker says that the
// caller may wait.
func (c *wsConn) settle(up bool, pb *pollBuf, st step, err error, since int64, onWorker bool) bool {
	for st == stepPark {
		if c.park(up, pb, since) {
			return false
		}
		var progressed bool
		st, progressed, err = c.flush(up, pb)
		if progressed {
			since = nowNano()
		}
	}
	switch st {
	case stepWait:
		c.poll.dispatch(pollTask{c: c, kind: taskForward, pb: pb, n: len(pb.rest)})
		return false
	case stepEnd:
		if onWorker || c.endsWithoutBlocking(up, err) {
			c.endDirection(up, err)
			putPollBuf(pb)
			c.unref()
			return false
		}
		c.poll.dispatch(pollTask{c: c, up: up, kind: taskEnd, pb: pb, err: err})
		return false
	}
	return true
}

// flush writes pb.rest, the bytes a parked direction holds, and reports
// whether any went (progress, for the write timeout).
func (c *wsConn) flush(up bool, pb *pollBuf) (st step, progressed bool, err error) {
	fd := c.bfd
	if !up {
		fd = c.cfd
	}
	w, err := c.writeFD(fd, pb.rest)
	pb.rest = pb.rest[w:]
	if err == errWouldBlock {
		return stepPark, w > 0, nil
	}
	if up {
		if err != nil {
			return stepEnd, w > 0, err
		}
		return stepOn, w > 0, nil
	}
	st, err = c.downWritten(err, pb.perr)
	return st, w > 0, err
}

// endsWithoutBlocking reports whether ending the direction cannot wait,
// so that the loop may do it itself rather than wake a worker: the client
// → backend end only half-closes the backend (unless the client broke the
// protocol: a close frame goes to it), and so does the backend → client
// end once the client has ended too (no close frame to write).
func (c *wsConn) endsWithoutBlocking(up bool, err error) bool {
	if up {
		var pe *protocolError
		return !errors.As(err, &pe)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.upDone
}

// resume does on a worker what the loop could not without waiting, then
// serves the direction on.
func (c *wsConn) resume(t pollTask) {
	switch t.kind {
	case taskEnd:
		c.endDirection(t.up, t.err)
		putPollBuf(t.pb)
		c.unref()
	case taskForward:
		st, err := c.forwardDown(t.pb, t.n, true)
		if st == stepOn || c.settle(false, t.pb, st, err, nowNano(), true) {
			// Still busy: the last read may have left bytes, and those
			// that came meanwhile were reported only as a note. serve
			// reads until the socket is empty and releases the direction.
			c.serve(false, t.pb)
		}
	}
}

// forwardUp checks the client's frame headers in the n bytes read into
// pb and writes them to the backend.
func (c *wsConn) forwardUp(pb *pollBuf, n int) (step, error) {
	p := pb.b[:n]
	if err := c.upFrames.check(p, c.rt.tunables().WSMaxFrameSize); err != nil {
		return stepEnd, err
	}
	if c.upFrames.closed {
		c.noteClientClose()
	}
	w, err := c.writeFD(c.bfd, p)
	switch {
	case err == errWouldBlock:
		pb.rest = p[w:]
		return stepPark, nil
	case err != nil:
		return stepEnd, err
	}
	return stepOn, nil
}

// forwardDown passes on n backend bytes read into pb.b at maxFrameHeader
// (the header bytes carried from the last read go right before them):
// whole frames, and a frame's start whose payload continues later (then
// wsem stays held, so nothing is written inside it). Unless block is set
// it does not wait for wsem: stepWait then leaves the n bytes in pb.b for
// a worker (pb.rest = n bytes is how the worker learns n).
func (c *wsConn) forwardDown(pb *pollBuf, n int, block bool) (step, error) {
	if c.discard {
		return stepOn, nil
	}
	buf := pb.b[:]
	if !c.holdsWsem {
		if block {
			c.wsem <- struct{}{}
		} else {
			select {
			case c.wsem <- struct{}{}:
			default: // a close or ping is being written
				pb.rest = buf[maxFrameHeader : maxFrameHeader+n]
				return stepWait, nil
			}
		}
		c.holdsWsem = true
		if c.closeSent {
			// The node closed: nothing may follow its close frame.
			c.discard = true
			c.releaseWsem()
			return stepOn, nil
		}
	}
	start := maxFrameHeader - c.frames.carry(buf[:maxFrameHeader])
	data := buf[start : maxFrameHeader+n]
	k, closed, perr := c.frames.advance(data)
	if closed {
		c.closeSent = true
		c.discard = true
		c.noteClose(closerBackend, c.frames.closeCode())
	}
	c.bytesOut.Add(int64(k))
	w, err := c.writeFD(c.cfd, data[:k])
	if err == errWouldBlock {
		pb.rest, pb.perr = data[w:k], perr
		return stepPark, nil // wsem stays held: the rest goes first
	}
	return c.downWritten(err, perr)
}

// downWritten follows a write to the client that finished (err nil) or
// failed: wsem is released at a frame boundary, and perr, a bad header
// after the bytes written, ends the direction.
func (c *wsConn) downWritten(err, perr error) (step, error) {
	if err != nil {
		c.closeSent = true // a frame may be cut: no close frame may follow
		c.releaseWsem()
		return stepEnd, err
	}
	if !c.frames.midFrame() {
		c.releaseWsem()
	}
	if perr != nil {
		return stepEnd, perr
	}
	return stepOn, nil
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
// otherwise it lingers for the close timeout at most. A client that broke
// the protocol gets its close code and the session closes.
func (c *wsConn) endDirection(up bool, err error) {
	if !up && c.holdsWsem {
		c.closeSent = true // the backend broke off inside a frame
		c.releaseWsem()
	}
	var pe *protocolError
	if up && errors.As(err, &pe) {
		c.refuseClient(pe)
		c.hardClose()
		return
	}
	c.noteEnd(up)
	c.mu.Lock()
	if up {
		c.upDone = true
	} else {
		c.downDone = true
	}
	both, clientOpen := c.upDone && c.downDone, !c.upDone
	c.mu.Unlock()
	if !up {
		if clientOpen {
			c.inject(CloseBadGateway, "backend connection lost")
		}
		if err != nil && !errors.Is(err, io.EOF) {
			c.rt.log.Debug().Uint64("ws", c.id).Err(err).Msg("websocket backend read")
		}
	}
	if both {
		// The close sends the FIN a shutdown would: one system call
		// less on every session's end, the common one of a handshake
		// storm.
		c.hardClose()
		return
	}
	if up {
		c.shutdownWrite(c.bfd)
	} else {
		c.shutdownWrite(c.cfd)
	}
	c.startLinger()
}

func (c *wsConn) shutdownWrite(fd int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.closed {
		_ = rawShutdown(fd, unix.SHUT_WR)
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

// writeTimedOut closes a session the sweep found with a direction parked
// since before cutoff. When only the backend stopped reading, the live
// client is told with CloseWriteTimeout first (on a goroutine: the close
// frame waits for a frame boundary). The caller holds a reference.
func (c *wsConn) writeTimedOut(cutoff int64) {
	c.mu.Lock()
	if c.closed || c.timedOut {
		c.mu.Unlock()
		return
	}
	c.timedOut = true
	c.mu.Unlock()
	backendStalled := parkedBefore(c.upPark.Load(), cutoff)
	clientStalled := c.downPark.Load() > parkWoken
	c.rt.wsWriteTimeouts.Add(1)
	peer := "client"
	if backendStalled {
		peer = "backend"
	}
	c.rt.log.Debug().Uint64("ws", c.id).Str("backend", c.backendID).Str("peer", peer).
		Dur("timeout", c.rt.tunables().WSWriteTimeout).Msg("websocket write timeout")
	if !backendStalled || clientStalled || !c.tryRef() {
		c.hardClose()
		return
	}
	go func() {
		defer c.unref()
		c.inject(CloseWriteTimeout, "backend write timeout")
		c.hardClose()
	}()
}

func (c *wsConn) onPing() {
	if !c.tryRef() {
		return
	}
	defer c.unref()
	c.ping()
	c.mu.Lock()
	// Off since (a reload): no more pings.
	if d := c.rt.tunables().WSPingInterval; !c.closed && d > 0 {
		c.pingT.Reset(d)
	}
	c.mu.Unlock()
}

func (c *wsConn) onIdle() {
	if !c.tryRef() {
		return
	}
	defer c.unref()
	d := c.rt.tunables().WSIdleTimeout
	if d <= 0 {
		return // turned off since (a reload)
	}
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
		n, err := rawRead(fd, p)
		if err == unix.EINTR {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}

// writeFD writes p to one of c's sockets without blocking and returns how
// much it wrote; errWouldBlock says the socket is full.
func (c *wsConn) writeFD(fd int, p []byte) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	written := 0
	for written < len(p) {
		n, err := rawWrite(fd, p[written:])
		if n > 0 {
			written += n
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return written, errWouldBlock
		case nil:
			return written, io.ErrShortWrite
		default:
			return written, err
		}
	}
	return written, nil
}

// writeClientPolled writes one of the node's own frames (a close or a
// ping; the caller holds wsem) to the client within the close timeout.
// It is rare that the socket is full then, so rather than being woken by
// the loop, the writer sleeps and tries again, parked in the runtime,
// not in the kernel.
func (c *wsConn) writeClientPolled(p []byte) error {
	deadline := time.Now().Add(c.rt.closeTimeout)
	wait := time.Millisecond
	for {
		w, err := c.writeFD(c.cfd, p)
		if err != errWouldBlock {
			return err
		}
		p = p[w:]
		if time.Now().After(deadline) {
			return os.ErrDeadlineExceeded
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}
