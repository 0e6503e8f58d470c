package main

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/node"
)

// reloadOnHUP makes SIGHUP reload the admin token file instead of killing
// the node (its default action). The returned function stops it and
// waits for the goroutine.
func reloadOnHUP(n *node.Node, log zerolog.Logger) (stop func()) {
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
				if err := n.ReloadAdminTokens(); err != nil {
					// The tokens in force stay: a typo must not lock the operator out.
					log.Error().Err(err).Msg("admin token reload failed; keeping the previous tokens")
				}
			}
		}
	})
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}
