package node

import "testing"

func TestAutoMaxConns(t *testing.T) {
	for _, tt := range []struct {
		limit uint64
		want  int
	}{
		{0, 0},               // unknown: unlimited
		{64, 16},             // too small to keep the reserve: a quarter
		{1024, 320},          // (1024 - 256 - 128) / 2
		{65536, 32128},       // (65536 - 256 - 1024) / 2
		{1 << 20, 523648},    // systemd's usual hard limit
		{1 << 62, 1<<31 - 1}, // bounded for 32-bit ints
	} {
		if got := autoMaxConns(tt.limit); got != tt.want {
			t.Errorf("autoMaxConns(%d) = %d; want %d", tt.limit, got, tt.want)
		}
	}
}

func TestResolveMaxConns(t *testing.T) {
	if n, _, auto := resolveMaxConns(7); n != 7 || auto {
		t.Errorf("explicit 7 = %d (auto %v); want 7", n, auto)
	}
	if n, _, auto := resolveMaxConns(-1); n != 0 || auto {
		t.Errorf("unlimited = %d (auto %v); want the router's 0", n, auto)
	}
	n, lim, auto := resolveMaxConns(0)
	if !auto || n != autoMaxConns(lim) {
		t.Errorf("auto = %d from limit %d (auto %v); want %d", n, lim, auto, autoMaxConns(lim))
	}
}
