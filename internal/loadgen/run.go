package loadgen

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Bench is one configured run. Create it with New and call Run once.
type Bench struct {
	cfg        Config
	path       string // cfg.Path without its query
	query      string // cfg.Path's query, kept on every connect
	sources    []netip.Addr
	transports []*http.Transport
	targets    *targets
	watch      *watcher
	st         *stats
	log        zerolog.Logger
}

// New validates cfg and prepares a run. It opens nothing.
func New(cfg Config) (*Bench, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", cfg.Path, err)
	}
	b := &Bench{cfg: cfg, path: u.Path, query: u.RawQuery, st: newStats(),
		log: cfg.Logger.With().Str("component", "bench").Logger()}
	b.sources = cfg.SourceIPs
	if len(b.sources) == 0 && !cfg.NoSourceIPs {
		b.sources = AutoSourceIPs(cfg.Nodes, cfg.Sessions)
	}
	if cfg.NoSourceIPs {
		b.sources = nil
	}
	// One transport per source address; the WebSocket library takes each
	// connection over from it after the handshake, so nothing is pooled.
	newTransport := func(local net.Addr) *http.Transport {
		d := &net.Dialer{Timeout: cfg.ConnectTimeout, LocalAddr: local, Resolver: cfg.Resolver}
		return &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true, Proxy: nil}
	}
	if len(b.sources) == 0 {
		b.transports = []*http.Transport{newTransport(nil)}
	}
	for _, a := range b.sources {
		b.transports = append(b.transports, newTransport(&net.TCPAddr{IP: a.AsSlice()}))
	}
	b.targets = newTargets(cfg.Nodes, cfg.Target, cfg.Resolver, cfg.NodeCooldown)
	var admins []string
	for _, a := range cfg.Admin {
		u, _ := adminURL(a) // validated
		admins = append(admins, u)
	}
	b.watch = newWatcher(admins, cfg.PollInterval, cfg.ProbeBackends, b.log)
	b.watch.token = cfg.AdminToken
	return b, nil
}

// Run opens the sessions at Rate, keeps them asking until Duration has
// passed or ctx ends, closes them, and reports. It blocks for the whole
// run and returns after every goroutine it started has returned. The error
// is only for a run that could not start (the mesh did not get ready in
// WaitReady); a bad verdict is in the report.
func (b *Bench) Run(ctx context.Context) (*Report, error) {
	if b.cfg.WaitReady > 0 {
		if err := b.watch.waitReady(ctx, b.cfg.WaitReady, b.cfg.WaitMembers); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	b.log.Info().Int("sessions", b.cfg.Sessions).Dur("duration", b.cfg.Duration).Uint64("seed", b.cfg.Seed).Msg("bench started")
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Duration)
	defer cancel()

	var wg sync.WaitGroup
	wg.Go(func() { b.watch.run(ctx) })

	results := make([]*session, b.cfg.Sessions)
	step := time.Duration(float64(time.Second) / b.cfg.Rate)
	started := 0
launch:
	for i := range b.cfg.Sessions {
		if wait := time.Until(start.Add(time.Duration(i) * step)); wait > 0 && !sleep(ctx, wait) {
			break launch
		}
		if ctx.Err() != nil {
			break
		}
		started++
		wg.Go(func() { results[i] = b.runSession(ctx, i) })
	}
	<-ctx.Done()
	wg.Wait()
	elapsed := time.Since(start)
	b.settle(results[:started])
	for _, t := range b.transports {
		t.CloseIdleConnections()
	}
	b.watch.client.CloseIdleConnections()
	return b.report(start, elapsed, results[:started]), nil
}

// settle polls the backend set a little longer when a move happened near
// the end: a backend that died just before the run ended is seen gone only
// after probeFailsToDrop more polls, and without them the moves it caused
// would be judged misroutes.
func (b *Bench) settle(sessions []*session) {
	if len(b.watch.admins) == 0 {
		return
	}
	late := time.Now().Add(-b.cfg.MoveWindow)
	found := false
	for _, s := range sessions {
		for _, m := range s.moves {
			found = found || m.firstNew.After(late)
		}
	}
	if !found {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.MoveWindow)
	defer cancel()
	for range probeFailsToDrop + 1 {
		if !sleep(ctx, b.cfg.PollInterval) {
			return
		}
		b.watch.pollOnce(ctx)
	}
}

// Sources returns the source addresses sessions bind to (nil: the
// kernel's choice).
func (b *Bench) Sources() []netip.Addr { return b.sources }

// Describe says in one line what the run will do, for a person.
func (b *Bench) Describe() string {
	where := strings.Join(b.cfg.Nodes, ",")
	if b.cfg.Target != "" {
		if where != "" {
			where += " and "
		}
		where += b.cfg.Target + " (DNS)"
	}
	return fmt.Sprintf("%d sessions for %v through %s, whoami every %v, seed %d",
		b.cfg.Sessions, b.cfg.Duration, where, b.cfg.WhoamiInterval, b.cfg.Seed)
}
