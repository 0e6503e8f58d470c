package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/meshlb/meshlb/gossip"
	"github.com/meshlb/meshlb/node"
	"github.com/meshlb/meshlb/ring"
)

// backendOptions are the ",key=value" options a backend spec may carry
// after its [id=]host:port. A new option is one entry here.
var backendOptions = map[string]func(b *node.BackendSpec, v string) error{
	"weight": func(b *node.BackendSpec, v string) error {
		w, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("weight %q: want an integer from 1 to %d", v, ring.MaxWeight)
		}
		if err := ring.ValidateWeight(w); err != nil {
			return fmt.Errorf("weight %d: want 1 to %d", w, ring.MaxWeight)
		}
		b.Weight = w
		return nil
	},
	"pool": func(b *node.BackendSpec, v string) error {
		if err := gossip.ValidatePool(v); err != nil {
			return err
		}
		b.Pool = v
		return nil
	},
}

// ParseBackends parses a --backend value: comma-separated backends, each
// "[id=]host:port" followed by its own ",key=value" options (weight, pool),
// as in "web-1=10.0.0.5:9000,weight=3,pool=rides,web-2=10.0.0.6:9000". An element is an
// option when its value holds no colon: an address always has one (its
// port), so "weight=10.0.0.7:80" is still a backend named weight.
func ParseBackends(v string) ([]node.BackendSpec, error) {
	var out []node.BackendSpec
	set := map[string]bool{} // options given to the last backend
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if key, val, ok := strings.Cut(s, "="); ok && !strings.Contains(val, ":") {
			key, val = strings.TrimSpace(key), strings.TrimSpace(val)
			apply, known := backendOptions[key]
			if !known {
				return nil, fmt.Errorf("backend option %q: unknown; allowed: %s", key, strings.Join(allowedBackendOptions(), ", "))
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("backend option %q comes before any [id=]host:port", s)
			}
			b := &out[len(out)-1]
			if set[key] {
				return nil, fmt.Errorf("backend %q: option %s given twice", b.ID, key)
			}
			set[key] = true
			if err := apply(b, val); err != nil {
				return nil, fmt.Errorf("backend %q: %w", b.ID, err)
			}
			continue
		}
		b, err := node.ParseBackendSpec(s)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
		clear(set)
	}
	return out, nil
}

func allowedBackendOptions() []string {
	names := make([]string, 0, len(backendOptions))
	for k := range backendOptions {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}
