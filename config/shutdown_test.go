package config

import (
	"bytes"
	"testing"
	"time"
)

// The deadline meshlb node gives Shutdown covers the drain delay, the whole
// drain timeout and the leave's budget, so that a long drain is not cut
// and the leave still gets its turn after it.
func TestShutdownDeadlineCoversDrainAndLeave(t *testing.T) {
	for _, tc := range []struct {
		label string
		args  []string
		least time.Duration
	}{
		{"defaults", nil, 1*time.Second + 30*time.Second + 5*time.Second},
		{"long drain", []string{"--drain-delay", "3s", "--drain-timeout", "2m", "--leave-timeout", "9s"}, 3*time.Second + 2*time.Minute + 9*time.Second},
		{"no delay", []string{"--drain-delay", "0", "--drain-timeout", "2s", "--leave-timeout", "1s"}, 3 * time.Second},
	} {
		t.Run(tc.label, func(t *testing.T) {
			c, err := ParseNode(append([]string{"--name", "n"}, tc.args...), nil, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			got := c.Node.ShutdownTimeout()
			if got < tc.least || got > tc.least+10*time.Second {
				t.Errorf("shutdown deadline = %v; want %v plus a few seconds", got, tc.least)
			}
		})
	}
}
