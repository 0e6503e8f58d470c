package gossip

import "fmt"

// State is the admin state of a backend in the catalog.
type State uint8

// Backend admin states. The zero value is invalid.
const (
	StateActive   State = iota + 1 // receives new sessions
	StateDraining                  // keeps its sessions, gets no new ones
	StateRemoved                   // a tombstone, kept for the tombstone TTL
)

func (s State) String() string {
	switch s {
	case StateActive:
		return "active"
	case StateDraining:
		return "draining"
	case StateRemoved:
		return "removed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

func (s State) valid() bool { return s >= StateActive && s <= StateRemoved }

// ParseState parses the names String returns.
func ParseState(s string) (State, error) {
	switch s {
	case "active":
		return StateActive, nil
	case "draining":
		return StateDraining, nil
	case "removed":
		return StateRemoved, nil
	}
	return 0, fmt.Errorf("parse state %q: unknown state", s)
}

// NodeState is the state a node announces in its meta.
type NodeState uint8

// Node states. The zero value is invalid.
const (
	NodeActive   NodeState = iota + 1 // serving
	NodeDraining                      // still serving, about to leave
	NodeLeaving                       // leaving gracefully; peers forget it
)

func (s NodeState) String() string {
	switch s {
	case NodeActive:
		return "active"
	case NodeDraining:
		return "draining"
	case NodeLeaving:
		return "leaving"
	}
	return fmt.Sprintf("node_state(%d)", uint8(s))
}

func (s NodeState) valid() bool { return s >= NodeActive && s <= NodeLeaving }

// Role is what a member does in the mesh.
type Role uint8

// Roles. The zero value is invalid.
const (
	RoleBalancer Role = iota + 1 // a meshlb balancer node
)

func (r Role) String() string {
	switch r {
	case RoleBalancer:
		return "balancer"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

func (r Role) valid() bool { return r == RoleBalancer }
