package router

import "testing"

// relayModes runs fn with the epoll relay and with the goroutine relay
// (the portable one, forced by marking epoll unavailable). Off Linux
// both are the goroutine relay.
func relayModes(t *testing.T, fn func(t *testing.T, goroutines bool)) {
	for _, goroutines := range []bool{false, true} {
		name := "epoll"
		if goroutines {
			name = "goroutines"
		}
		t.Run(name, func(t *testing.T) { fn(t, goroutines) })
	}
}

// relayModesAll is relayModes under a parent subtest name.
func relayModesAll(t *testing.T, name string, fn func(t *testing.T, goroutines bool)) {
	t.Run(name, func(t *testing.T) { relayModes(t, fn) })
}
