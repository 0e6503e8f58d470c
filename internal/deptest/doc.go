// Package deptest holds one test: the arrows between meshlb's packages,
// checked with go list the way tailscale's tstest/deptest does, so a new
// import that crosses a boundary fails CI instead of waiting for a review.
package deptest
