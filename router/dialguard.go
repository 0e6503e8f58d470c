package router

import (
	"net/netip"
	"syscall"
)

// refusedError marks a connect that Config.DialGuard refused: it fails
// like a connect the backend refused (the next candidate is tried, 502 if
// none), but it is not the backend's fault, so OnFailure does not hear of
// it and it is logged apart.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return "refused by policy: " + e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// dialControl is the net.Dialer Control of every connect to a backend. It
// runs after name resolution, once per address tried, so the guard sees
// the address actually dialled, whatever name the catalog holds.
func (rt *Router) dialControl(network, address string, c syscall.RawConn) error {
	if rt.dialHookForTest != nil {
		if err := rt.dialHookForTest(network, address, c); err != nil {
			return err
		}
	}
	if rt.cfg.DialGuard == nil {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil // not an IP address: nothing the guard judges
	}
	if err := rt.cfg.DialGuard(ap); err != nil {
		return &refusedError{err}
	}
	return nil
}
