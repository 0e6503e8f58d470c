package integration

import (
	"strings"
	"testing"
)

// A mistyped flag gets one line naming it and a hint, exit 2, not the
// whole help; --help still prints the help, exit 0, with flags written as
// users type them (--name), the same in every command.
func TestUnknownFlagPrintsOneLineAndAHint(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"node", "status", "backends", "route", "keys", "echo", "bench", "demo"} {
		_, stderr, code := cli(t, cmd, "--bogus")
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || len(lines) != 1 || !strings.Contains(stderr, "-bogus") ||
			!strings.Contains(stderr, "see meshlb "+cmd+" --help") {
			t.Errorf("meshlb %s --bogus: exit %d, stderr %q; want exit 2 and one line with a hint", cmd, code, stderr)
		}
		_, stderr, code = cli(t, cmd, "--help")
		if code != 0 || !strings.Contains(stderr, "Usage: meshlb "+cmd) {
			t.Errorf("meshlb %s --help: exit %d, stderr %q; want the help", cmd, code, stderr)
		}
		for _, l := range strings.Split(stderr, "\n") {
			if strings.HasPrefix(l, "  -") && !strings.HasPrefix(l, "  --") {
				t.Errorf("meshlb %s --help: flag line %q: want the --name style of meshlb node --help", cmd, l)
			}
		}
	}
}
