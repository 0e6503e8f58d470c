//go:build !linux

// Package netlab is Linux-only (network namespaces and veth pairs);
// elsewhere it is empty, so that the module builds and vets on every
// platform.
package netlab
