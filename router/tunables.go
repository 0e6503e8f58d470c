package router

import (
	"fmt"
	"time"
)

// Tunables are the limits and timeouts of a Config that SetTunables
// changes on a running router (a SIGHUP's reload): each request and
// session reads them when it needs them, so a change applies to what
// starts after it, and to the timers of open WebSockets at their next
// reset. Zero means the default, as in Config.
type Tunables struct {
	MaxConns         int
	DialTimeout      time.Duration
	HandshakeTimeout time.Duration
	WSIdleTimeout    time.Duration
	WSPingInterval   time.Duration
	WSWriteTimeout   time.Duration
	WSMaxFrameSize   int64
	HTTPWriteTimeout time.Duration
}

// Tunables returns c's limits and timeouts, for SetTunables.
func (c Config) Tunables() Tunables {
	return Tunables{
		MaxConns: c.MaxConns, DialTimeout: c.DialTimeout, HandshakeTimeout: c.HandshakeTimeout,
		WSIdleTimeout: c.WSIdleTimeout, WSPingInterval: c.WSPingInterval, WSWriteTimeout: c.WSWriteTimeout,
		WSMaxFrameSize: c.WSMaxFrameSize, HTTPWriteTimeout: c.HTTPWriteTimeout,
	}
}

// apply writes t into c's fields.
func (t Tunables) apply(c *Config) {
	c.MaxConns, c.DialTimeout, c.HandshakeTimeout = t.MaxConns, t.DialTimeout, t.HandshakeTimeout
	c.WSIdleTimeout, c.WSPingInterval, c.WSWriteTimeout = t.WSIdleTimeout, t.WSPingInterval, t.WSWriteTimeout
	c.WSMaxFrameSize, c.HTTPWriteTimeout = t.WSMaxFrameSize, t.HTTPWriteTimeout
}

// withDefaults checks t and fills its zero fields with the defaults.
func (t Tunables) withDefaults() (Tunables, error) {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"dial timeout", t.DialTimeout},
		{"handshake timeout", t.HandshakeTimeout},
		{"websocket idle timeout", t.WSIdleTimeout},
		{"websocket ping interval", t.WSPingInterval},
		{"websocket write timeout", t.WSWriteTimeout},
		{"http write timeout", t.HTTPWriteTimeout},
	} {
		if d.v < 0 {
			return t, fmt.Errorf("negative %s %v", d.name, d.v)
		}
	}
	if t.WSMaxFrameSize < 0 {
		return t, fmt.Errorf("negative websocket max frame size %d", t.WSMaxFrameSize)
	}
	if t.MaxConns < 0 {
		return t, fmt.Errorf("negative max conns %d", t.MaxConns)
	}
	for _, f := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&t.DialTimeout, DefaultDialTimeout},
		{&t.HandshakeTimeout, DefaultHandshakeTimeout},
		{&t.WSWriteTimeout, DefaultWSWriteTimeout},
		{&t.HTTPWriteTimeout, DefaultHTTPWriteTimeout},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if t.WSMaxFrameSize == 0 {
		t.WSMaxFrameSize = DefaultWSMaxFrameSize
	}
	return t, nil
}

// tunables are the limits and timeouts in force.
func (rt *Router) tunables() *Tunables { return rt.tun.Load() }

// Tunables returns the limits and timeouts in force, defaults filled in.
func (rt *Router) Tunables() Tunables { return *rt.tun.Load() }

// SetTunables replaces the limits and timeouts. A bad value changes
// nothing and is returned.
func (rt *Router) SetTunables(t Tunables) error {
	t, err := t.withDefaults()
	if err != nil {
		return fmt.Errorf("router tunables: %w", err)
	}
	rt.tun.Store(&t)
	return nil
}
