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
		{ring.AlgorithmV2, 101, "want 1 to 100"},
		{ring.AlgorithmV1, 101, "want 1 to 100"},
	} {
		c := Config{Ring: ring.Config{Algorithm: tc.algo}, Backends: []BackendSpec{{ID: "b", Addr: "10.0.0.1:80", Weight: tc.weight}}}
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s weight %d: %v, want %q", tc.algo, tc.weight, err, tc.want)
		}
	}
	for _, w := range []int{1, 2, 100} {
		c := Config{Ring: ring.Config{Algorithm: ring.AlgorithmV2}, Backends: []BackendSpec{{ID: "b", Addr: "10.0.0.1:80", Weight: w}}}
		if err := c.validate(); err != nil && strings.Contains(err.Error(), "weight") {
			t.Errorf("v2 with weight %d: %v", w, err)
		}
	}
}
