//go:build !linux

package main

import (
	"fmt"
	"os"
)

// proxybench reads /proc and drives Linux-only tools; elsewhere it only says so,
// so that the module builds and vets on every platform.
func main() {
	fmt.Fprintln(os.Stderr, "proxybench: Linux only")
	os.Exit(2)
}
