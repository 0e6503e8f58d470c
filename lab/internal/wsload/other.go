//go:build !linux

// Package wsload is Linux-only (it reads /proc and binds 127.0.0.x source
// addresses); elsewhere it is empty, so that the module builds and vets on
// every platform.
package wsload
