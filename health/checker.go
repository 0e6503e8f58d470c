package health

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

// CheckConfig is one node's active and passive checking. It may differ from
// node to node: a node's checks are only its vote.
type CheckConfig struct {
	// Interval between checks of one backend, Timeout of one check; Rise
	// consecutive successes bring a backend up, Fall consecutive failures
	// take it down, as in HAProxy. Defaults 1s, 500ms, 2, 2.
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
	// FastInterval replaces Interval while a backend is in transition (up
	// with a failure, or down with a success), as HAProxy's fastinter:
	// a change is confirmed sooner, and a steady state costs no more
	// checks. Default Interval/4.
	FastInterval time.Duration
	// HTTPPath, when set, makes a check an HTTP GET of this path that must
	// answer a status in [StatusMin, StatusMax] (default 200..399);
	// otherwise a check is a TCP connect.
	HTTPPath             string
	StatusMin, StatusMax int
	// PoolHTTPPath, by pool, replaces HTTPPath for the backends of that
	// pool: services behind one mesh have their own health URLs.
	PoolHTTPPath map[string]string
	// MaxPassiveDownPercent caps the share of backends that passive
	// failures alone may take down in this node's view: a burst (this
	// node's own network hiccup) can't mark everything down at once. Past
	// it, a failure only triggers an early active check. Default 50.
	MaxPassiveDownPercent int

	// Dial, if set, replaces the dialer (tests inject faults with it).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Check defaults.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = 500 * time.Millisecond
	DefaultRise     = 2
	DefaultFall     = 2
)

// WithDefaults fills zero fields.
func (c CheckConfig) WithDefaults() CheckConfig {
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.Timeout = cmp.Or(c.Timeout, DefaultTimeout)
	c.Rise = cmp.Or(c.Rise, DefaultRise)
	c.Fall = cmp.Or(c.Fall, DefaultFall)
	c.FastInterval = cmp.Or(c.FastInterval, c.Interval/4)
	if c.StatusMin == 0 && c.StatusMax == 0 {
		c.StatusMin, c.StatusMax = 200, 399
	}
	c.MaxPassiveDownPercent = cmp.Or(c.MaxPassiveDownPercent, 50)
	return c
}

// Validate reports a config that can't be applied.
func (c CheckConfig) Validate() error {
	switch {
	case c.Interval <= 0 || c.Timeout <= 0 || c.FastInterval <= 0:
		return fmt.Errorf("health interval %v, fast interval %v, timeout %v: want all > 0", c.Interval, c.FastInterval, c.Timeout)
	case c.Rise < 1 || c.Fall < 1 || c.Rise > 1000 || c.Fall > 1000:
		return fmt.Errorf("health rise %d, fall %d: want 1..1000", c.Rise, c.Fall)
	case c.HTTPPath != "" && !strings.HasPrefix(c.HTTPPath, "/"):
		return fmt.Errorf("health http path %q: want an absolute path like /healthz", c.HTTPPath)
	case c.StatusMin < 100 || c.StatusMax > 599 || c.StatusMin > c.StatusMax:
		return fmt.Errorf("health http status %d-%d: want a range within 100-599", c.StatusMin, c.StatusMax)
	case c.MaxPassiveDownPercent < 0 || c.MaxPassiveDownPercent > 100:
		return fmt.Errorf("max passive down percent %d: want 0..100", c.MaxPassiveDownPercent)
	}
	for pool, p := range c.PoolHTTPPath {
		if p != "" && !strings.HasPrefix(p, "/") {
			return fmt.Errorf("health http path %q of pool %s: want an absolute path like /healthz, or empty for a TCP connect", p, pool)
		}
	}
	return nil
}

// ParseStatusRange parses "200-399" or a single status "200".
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		b = a
	}
	if _, err := fmt.Sscanf(a+" "+b, "%d %d", &lo, &hi); err != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("%q: want a status or a range like 200-399 within 100-599", s)
	}
	return lo, hi, nil
}

// Target is a backend to check.
type Target struct {
	ID   string
	Addr string
	Pool string // for CheckConfig.PoolHTTPPath
}

// Report receives a change of this node's view of a backend: the first
// determination (the first success, or Fall failures) and every change
// after it. It is called from the checker's goroutines, one backend at a
// time, and must not block for long.
type Report func(id string, up bool, detail string)

// Checker runs this node's checks: one goroutine per backend, asleep
// between checks.
type Checker struct {
	cfg    CheckConfig
	report Report
	log    zerolog.Logger
	client *http.Client
	dialer net.Dialer

	mu      sync.Mutex
	targets map[string]*target
	closed  bool
	wg      sync.WaitGroup

	// view is a copy-on-write map of the targets, read on the request
	// path (LocallyDown) without locking.
	view atomic.Pointer[map[string]*target]

	checks, failures atomic.Uint64
	abstained        atomic.Uint64  // failed checks that did not count (local.go)
	abstainLog       zerolog.Logger // sampled
}

type target struct {
	Target
	cancel context.CancelFunc
	kick   chan struct{} // cap 1: check now

	down    atomic.Bool // this node's view
	passive atomic.Bool // down because of passive failures alone

	mu        sync.Mutex // guards the counters, shared with Passive
	succ      int
	fail      int
	published bool
	detail    string
}

// NewChecker returns a Checker with no targets.
func NewChecker(cfg CheckConfig, report Report, log zerolog.Logger) (*Checker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Checker{cfg: cfg, report: report, log: log.With().Str("component", "health").Logger(), targets: map[string]*target{}}
	c.abstainLog = c.log.Sample(&zerolog.BurstSampler{Burst: 1, Period: 10 * time.Second})
	c.dialer.Timeout = cfg.Timeout
	dial := c.dialer.DialContext
	if cfg.Dial != nil {
		dial = cfg.Dial
	}
	c.client = &http.Client{
		Transport: &http.Transport{
			DialContext:           dial,
			DisableKeepAlives:     true, // a check is a fresh connection, as HAProxy's
			ResponseHeaderTimeout: cfg.Timeout,
		},
		Timeout: cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a 3xx is an answer, not an instruction
		},
	}
	empty := map[string]*target{}
	c.view.Store(&empty)
	return c, nil
}

// Sync makes the set of checked backends ts: new ones start (at a random
// point of the first interval, so checks spread), gone ones stop, and one
// whose address changed starts over.
func (c *Checker) Sync(ts []Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	want := make(map[string]Target, len(ts))
	for _, t := range ts {
		want[t.ID] = t
	}
	changed := false
	for id, t := range c.targets {
		if w, ok := want[id]; !ok || w.Addr != t.Addr || w.Pool != t.Pool {
			t.cancel()
			delete(c.targets, id)
			changed = true
		}
	}
	for id, w := range want {
		if _, ok := c.targets[id]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		t := &target{Target: w, cancel: cancel, kick: make(chan struct{}, 1)}
		c.targets[id] = t
		c.wg.Go(func() { c.run(ctx, t) })
		changed = true
	}
	if changed {
		view := make(map[string]*target, len(c.targets))
		for id, t := range c.targets {
			view[id] = t
		}
		c.view.Store(&view)
	}
}

// Close stops every check and waits for them.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	for _, t := range c.targets {
		t.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// LocallyDown reports whether this node's own checks see backend id down.
// It is cheap enough for the request path.
func (c *Checker) LocallyDown(id string) bool {
	t, ok := (*c.view.Load())[id]
	return ok && t.down.Load()
}

// View is this node's view of one backend.
type View struct {
	Checked bool // a check has determined it
	Up      bool
	Detail  string
}

// View returns this node's view of backend id.
func (c *Checker) View(id string) View {
	t, ok := (*c.view.Load())[id]
	if !ok {
		return View{}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return View{Checked: t.published, Up: !t.down.Load(), Detail: t.detail}
}

// Counts returns how many checks ran and how many failed.
func (c *Checker) Counts() (checks, failures uint64) { return c.checks.Load(), c.failures.Load() }

// Passive records a failure the router saw connecting to backend id. It
// counts as a failed check at once (Fall of them take the backend down in
// this node's view), unless passive failures already hold
// MaxPassiveDownPercent of the backends down; either way it asks for an
// early active check, which alone can bring the backend back.
func (c *Checker) Passive(id string, err error) {
	if c.abstain(id, err, 0, 0) {
		return
	}
	view := *c.view.Load()
	t, ok := view[id]
	if !ok {
		return
	}
	select {
	case t.kick <- struct{}{}:
	default:
	}
	if t.down.Load() {
		return
	}
	passiveDown := 0
	for _, o := range view {
		if o.passive.Load() {
			passiveDown++
		}
	}
	if (passiveDown+1)*100 > len(view)*c.cfg.MaxPassiveDownPercent {
		return
	}
	c.record(t, false, "passive: "+short(err), true)
}

func (c *Checker) run(ctx context.Context, t *target) {
	first := time.Duration(rand.Int64N(int64(c.cfg.Interval)))
	timer := time.NewTimer(first)
	defer timer.Stop()
	due := time.Now().Add(first) // when the timer should fire, to see it late
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-t.kick:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			due = time.Now()
		}
		start := time.Now()
		ok, detail, err := c.check(ctx, t.Target)
		if ctx.Err() != nil {
			return
		}
		next := c.cfg.Interval
		if !ok && c.abstain(t.ID, err, start.Sub(due), time.Since(start)) {
			// Counted neither way; the view stands.
		} else if c.record(t, ok, detail, false) {
			next = c.cfg.FastInterval
		}
		timer.Reset(next)
		due = time.Now().Add(next)
	}
}

// record applies one check result to t's counters and reports a change. It
// returns whether the backend is in transition (a result against its state
// that has not yet changed it).
func (c *Checker) record(t *target, ok bool, detail string, passive bool) (transition bool) {
	c.checks.Add(1)
	if !ok {
		c.failures.Add(1)
	}
	// Held while reporting, so two results (a passive failure and an
	// active check) can't report out of order.
	t.mu.Lock()
	defer t.mu.Unlock()
	was := !t.down.Load()
	up := was
	if ok {
		t.fail = 0
		t.succ++
		if !was && t.succ >= c.cfg.Rise {
			up = true
		}
	} else {
		t.succ = 0
		t.fail++
		if was && t.fail >= c.cfg.Fall {
			up = false
		}
	}
	transition = (up && t.fail > 0) || (!up && t.succ > 0)
	first := !t.published && (ok || !up)
	if up == was && !first {
		return transition
	}
	t.down.Store(!up)
	t.passive.Store(!up && passive)
	t.published = true
	t.detail = detail
	if up != was {
		c.log.Info().Str("backend", t.ID).Str("addr", t.Addr).Bool("up", up).Str("detail", detail).Msg("backend check state changed")
	}
	c.report(t.ID, up, detail)
	return transition
}

// check runs one active check of addr; err is why it failed, if it did.
func (c *Checker) check(ctx context.Context, t Target) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	addr, path := t.Addr, c.cfg.HTTPPath
	if p, ok := c.cfg.PoolHTTPPath[t.Pool]; ok {
		path = p
	}
	if path == "" {
		var conn net.Conn
		var err error
		if c.cfg.Dial != nil {
			conn, err = c.cfg.Dial(ctx, "tcp", addr)
		} else {
			conn, err = c.dialer.DialContext(ctx, "tcp", addr)
		}
		if err != nil {
			return false, "tcp: " + short(err), err
		}
		conn.Close()
		return true, "", nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return false, "http: " + short(err), err
	}
	req.Header.Set("User-Agent", "meshlb-health-check")
	resp, err := c.client.Do(req)
	if err != nil {
		return false, "http: " + short(err), err
	}
	// Read a little so the backend doesn't see a reset mid-answer.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode < c.cfg.StatusMin || resp.StatusCode > c.cfg.StatusMax {
		return false, fmt.Sprintf("http: status %d", resp.StatusCode), nil
	}
	return true, "", nil
}

// short names an error without the addresses the caller already knows.
func short(err error) string {
	switch {
	case err == nil:
		return "failed"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && i+2 < len(s) {
		s = s[i+2:]
	}
	return s
}
