package gossip

import (
	"testing"

	"go.uber.org/goleak"
)

// memberlist's probeNode may still be waiting for its ack timer (at most a
// probe interval) after Shutdown returns; it exits on its own and touches
// nothing of ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}
