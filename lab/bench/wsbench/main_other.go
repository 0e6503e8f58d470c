//go:build !linux

package main

import (
	"fmt"
	"os"
)

// wsbench reads /proc and drives Linux-only tools; elsewhere it only says so,
// so that the module builds and vets on every platform.
func main() {
	fmt.Fprintln(os.Stderr, "wsbench: Linux only")
	os.Exit(2)
}
