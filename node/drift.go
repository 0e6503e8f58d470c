package node

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/meshlb/meshlb/gossip"
)

// A node whose ring or key settings differ from the mesh's routes some keys
// elsewhere than every other node: its clients' sessions split. Reporting it
// (checkPeers) is not enough, so such a node refuses traffic until its
// config agrees: it is not ready, and the proxy answers 503 (the picker
// returns errConfigDrift), unless Config.AllowConfigDrift says the operator
// is changing ring parameters on purpose.
//
// Only the config fingerprint counts. The ring fingerprint differs for a
// moment on every change, until every node has rebuilt; the config's
// changes with a restart, or with a reload of the routes (ApplyRoutes).

// meshConfigFP is the config fingerprint most live members publish, with a
// tie going to the lowest-named member's, so that in a 1:1 split exactly
// one side refuses; agree reports whether ours is it, and votes how many
// live members publish ours of how many.
func meshConfigFP(members []gossip.Member, self string, ours uint64) (fpMesh uint64, agree bool, votes, of int) {
	count := map[uint64]int{}
	first := map[uint64]string{} // lowest-named member publishing each
	for _, m := range members {
		if !live(m) {
			continue
		}
		f := m.Meta.ConfigFP
		if m.Name == self {
			f = ours
		}
		count[f]++
		of++
		if n, ok := first[f]; !ok || m.Name < n {
			first[f] = m.Name
		}
	}
	if of == 0 {
		return ours, true, 0, 0
	}
	fps := slices.Collect(maps.Keys(count))
	slices.SortFunc(fps, func(a, b uint64) int {
		return cmp.Or(cmp.Compare(count[b], count[a]), cmp.Compare(first[a], first[b]))
	})
	return fps[0], fps[0] == ours, count[ours], of
}

// updateDrift recomputes whether this node refuses traffic for its config,
// on every membership or meta change, and logs each change of that.
func (n *Node) updateDrift() {
	fpMesh, agree, votes, of := meshConfigFP(n.cluster.Members(), n.cfg.Name, n.configFP.Load())
	reason := ""
	if !agree {
		reason = fmt.Sprintf("this node's ring or key configuration (fingerprint %s) differs from the mesh's (%s): "+
			"%d of %d live members publish this node's; it would route keys elsewhere", fp(n.configFP.Load()), fp(fpMesh), votes, of)
	}
	prev := n.drift.Swap(&reason)
	if prev != nil && *prev == reason {
		return
	}
	switch {
	case reason != "" && n.cfg.AllowConfigDrift:
		n.log.Warn().Str("config_fingerprint", fp(n.configFP.Load())).Str("mesh_config_fingerprint", fp(fpMesh)).
			Msg("configuration differs from the mesh's; serving anyway (--allow-config-drift)")
	case reason != "":
		n.log.Error().Str("config_fingerprint", fp(n.configFP.Load())).Str("mesh_config_fingerprint", fp(fpMesh)).
			Int("agreeing", votes).Int("live", of).
			Msg("configuration differs from the mesh's; refusing traffic until it agrees (restart with the mesh's ring and key settings, or --allow-config-drift)")
	case prev != nil && *prev != "":
		n.log.Info().Str("config_fingerprint", fp(n.configFP.Load())).Msg("configuration agrees with the mesh's again; serving")
	}
}

// driftRefusal is why this node refuses traffic for its config, or "".
func (n *Node) driftRefusal() string {
	if n.cfg.AllowConfigDrift {
		return ""
	}
	if r := n.drift.Load(); r != nil {
		return *r
	}
	return ""
}
