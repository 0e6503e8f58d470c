package main

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/meshlb/meshlb/node"
)

// reloadOnHUP makes SIGHUP reload what a running node can take again
// (node.Reload: tokens, certificates, the access log) instead of killing
// it, which is SIGHUP's default action. The returned function stops it and
// waits for the goroutine.
func reloadOnHUP(n *node.Node) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-ch:
				n.Reload()
			}
		}
	})
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}
