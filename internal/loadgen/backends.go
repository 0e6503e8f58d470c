package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// maxSetHistory bounds the backend sets kept for the report.
const maxSetHistory = 100

// probeFailsToDrop is how many probes in a row a backend must fail to
// leave the set.
const probeFailsToDrop = 2

// BackendSet is the backend set as the checker saw it from one moment on.
type BackendSet struct {
	At       time.Time `json:"at"`
	Backends []string  `json:"backends"`
}

// watcher polls the admin API for the backend set and keeps the moments it
// changed. Safe for concurrent use; run is its only goroutine.
type watcher struct {
	admins   []string // base URLs
	interval time.Duration
	probe    bool
	client   *http.Client
	log      zerolog.Logger
	token    string // bearer token for the admin API; "" for none

	probeFails map[string]int // backend ID → probes failed in a row; run's goroutine only

	mu      sync.Mutex
	next    int // admin to ask first
	current string
	known   bool
	changes []time.Time
	history []BackendSet
	polls   int64
	errors  int64
	lastErr string
}

func newWatcher(admins []string, interval time.Duration, probe bool, log zerolog.Logger) *watcher {
	return &watcher{
		admins: admins, interval: interval, probe: probe, log: log, probeFails: map[string]int{},
		// A fresh connection per poll: a keep-alive connection would pin
		// one address of a DNS name whose node may be gone.
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}},
	}
}

// run polls until ctx ends.
func (w *watcher) run(ctx context.Context) {
	if len(w.admins) == 0 {
		return
	}
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		w.pollOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pollOnce asks each admin in turn, starting with the last that answered,
// and records the set of the first answer.
func (w *watcher) pollOnce(ctx context.Context) {
	w.mu.Lock()
	first := w.next
	w.mu.Unlock()
	var err error
	for i := range w.admins {
		k := (first + i) % len(w.admins)
		var set []string
		if set, err = w.fetch(ctx, w.admins[k]); err == nil {
			w.record(time.Now(), set)
			w.mu.Lock()
			w.next = k
			w.mu.Unlock()
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
	w.mu.Lock()
	w.polls++
	w.errors++
	w.lastErr = err.Error()
	w.mu.Unlock()
	w.log.Debug().Err(err).Msg("backend set poll failed")
}

type backendsAnswer struct {
	Backends []struct {
		ID     string `json:"id"`
		Addr   string `json:"addr"`
		State  string `json:"state"`
		InRing bool   `json:"in_ring"`
	} `json:"backends"`
}

// fetch returns the sorted IDs of the backends in base's ring, less those
// the probe could not reach.
func (w *watcher) fetch(ctx context.Context, base string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/backends", nil)
	if err != nil {
		return nil, err
	}
	if w.token != "" {
		req.Header.Set("Authorization", "Bearer "+w.token)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s/v1/backends: %w", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/v1/backends: HTTP %d", base, resp.StatusCode)
	}
	var a backendsAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("%s/v1/backends: %w", base, err)
	}
	var ids []string
	var addrs []string
	for _, b := range a.Backends {
		if b.InRing {
			ids = append(ids, b.ID)
			addrs = append(addrs, b.Addr)
		}
	}
	if w.probe {
		up := make([]bool, len(addrs))
		var wg sync.WaitGroup
		for i, addr := range addrs {
			wg.Go(func() {
				d := net.Dialer{Timeout: time.Second}
				if c, err := d.DialContext(ctx, "tcp", addr); err == nil {
					up[i] = true
					c.Close()
				}
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// A backend leaves the set after probeFailsToDrop failed probes in
		// a row: one dial that times out on a loaded machine must not
		// count as a set change, which would excuse misroutes near it.
		kept := ids[:0]
		for i, id := range ids {
			if up[i] {
				w.probeFails[id] = 0
			} else {
				w.probeFails[id]++
			}
			if w.probeFails[id] < probeFailsToDrop {
				kept = append(kept, id)
			}
		}
		ids = kept
	}
	slices.Sort(ids)
	return ids, nil
}

func (w *watcher) record(at time.Time, set []string) {
	key := strings.Join(set, "\x00")
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	if w.known && key == w.current {
		return
	}
	if w.known {
		w.changes = append(w.changes, at)
		w.log.Debug().Strs("backends", set).Msg("backend set changed")
	}
	w.known, w.current = true, key
	if len(w.history) < maxSetHistory {
		w.history = append(w.history, BackendSet{At: at.UTC(), Backends: append([]string{}, set...)})
	}
}

// snapshot returns the change moments and what the report shows.
func (w *watcher) snapshot() (changes []time.Time, history []BackendSet, polls, errs int64, lastErr string, known bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.changes), slices.Clone(w.history), w.polls, w.errors, w.lastErr, w.known
}

// changedNear reports whether the set changed within window of [from, to].
func changedNear(changes []time.Time, from, to time.Time, window time.Duration) bool {
	lo, hi := from.Add(-window), to.Add(window)
	for _, c := range changes {
		if !c.Before(lo) && !c.After(hi) {
			return true
		}
	}
	return false
}

type statusAnswer struct {
	Ready   bool       `json:"ready"`
	Reason  string     `json:"reason"`
	Members []struct{} `json:"members"`
	Ring    struct {
		Backends int `json:"backends"`
	} `json:"ring"`
	RingAgreed bool `json:"ring_agreed"`
}

// waitReady polls GET /v1/status on the admins until one reports a ready
// node, in a mesh of at least members nodes that agrees on a ring with
// backends, or timeout passes.
func (w *watcher) waitReady(ctx context.Context, timeout time.Duration, members int) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	why := "no answer yet"
	for {
		for _, base := range w.admins {
			s, err := w.status(ctx, base)
			switch {
			case err != nil:
				why = err.Error()
			case !s.Ready:
				why = fmt.Sprintf("%s: not ready: %s", base, s.Reason)
			case len(s.Members) < members:
				why = fmt.Sprintf("%s: %d members, want %d", base, len(s.Members), members)
			case s.Ring.Backends == 0 || !s.RingAgreed:
				why = fmt.Sprintf("%s: %d backends in the ring, agreed %v", base, s.Ring.Backends, s.RingAgreed)
			default:
				return nil
			}
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return fmt.Errorf("mesh not ready after %v: %s", timeout, why)
		}
	}
}

func (w *watcher) status(ctx context.Context, base string) (statusAnswer, error) {
	var s statusAnswer
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/status", nil)
	if err != nil {
		return s, err
	}
	if w.token != "" {
		req.Header.Set("Authorization", "Bearer "+w.token)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("%s/v1/status: HTTP %d", base, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&s); err != nil {
		return s, fmt.Errorf("%s/v1/status: %w", base, err)
	}
	return s, nil
}
