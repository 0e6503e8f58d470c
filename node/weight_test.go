package node

import (
	"strings"
	"testing"

	"github.com/meshlb/meshlb/ring"
)

func TestConfigRefusesWeights(t *testing.T) {
	for _, tc := range []struct {
		algo   string
		weight int
		want   string
	}{
		{ring.AlgorithmV2, 2, "need --ring-algorithm v1"},
		{ring.AlgorithmV1, 101, "want 1 to 100"},
	} {
		c := Config{Ring: ring.Config{Algorithm: tc.algo}, Backends: []BackendSpec{{ID: "b", Addr: "10.0.0.1:80", Weight: tc.weight}}}
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s weight %d: %v, want %q", tc.algo, tc.weight, err, tc.want)
		}
	}
	c := Config{Ring: ring.Config{Algorithm: ring.AlgorithmV2}, Backends: []BackendSpec{{ID: "b", Addr: "10.0.0.1:80", Weight: 1}}}
	if err := c.validate(); err != nil && strings.Contains(err.Error(), "weight") {
		t.Errorf("v2 with weight 1: %v", err)
	}
}
