package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/meshlb/meshlb/internal/demo"
)

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshlb demo", flag.ContinueOnError)
	base := fs.Int("base-port", 18000, "first port: nodes' proxies on base+i, admin APIs on base+100+i, gossip on base+200+i, backends on base+300+j, the page on base+400")
	nodes := fs.Int("nodes", 3, "number of meshlb nodes")
	backends := fs.Int("backends", 3, "number of echo backends")
	level := fs.String("log-level", "warn", "log level of the nodes and backends")
	const head = `Usage: meshlb demo [flags]

Runs a meshlb mesh on loopback in one process: nodes that join through a seed
and echo backends that answer with their name, plus a page where you open
WebSocket sessions and stop and start nodes and backends to watch sessions stick.
Ctrl-C stops everything.

Flags:
`
	if done, code := parseFlags(fs, args, stderr, head); done {
		return code
	}
	lvl, err := zerolog.ParseLevel(*level)
	if err != nil || *level == "" {
		fmt.Fprintf(stderr, "meshlb demo: --log-level %q is not one of debug, info, warn, error\n", *level)
		return 2
	}
	m, err := demo.StartMesh(demo.MeshConfig{BasePort: *base, Nodes: *nodes, Backends: *backends, Logger: newLogger(stderr, lvl, "auto")})
	if err != nil {
		fmt.Fprintf(stderr, "meshlb demo: %v\n", err)
		return 1
	}
	proxies, admins := m.NodeProxies(), m.NodeAdmins()
	fmt.Fprintf(stdout, "meshlb demo: %d nodes, %d echo backends on loopback\n\n", *nodes, *backends)
	for i := range proxies {
		fmt.Fprintf(stdout, "  node %c  proxy http://%s  admin http://%s\n", 'a'+i, proxies[i], admins[i])
	}
	fmt.Fprintf(stdout, `
Open the page:  %s
The mesh dashboard, on every node:  http://%s/ui/

The same session through every node reaches the same backend:
`, m.PageURL(), admins[0])
	for _, p := range proxies {
		fmt.Fprintf(stdout, "  curl 'http://%s/?session_id=alice'\n", p)
	}
	// The commands name the binary as it was started (bin/meshlb under make
	// demo), so they work as pasted from the same directory.
	self := os.Args[0]
	if strings.ContainsAny(self, " '\"") {
		self = "meshlb"
	}
	fmt.Fprintf(stdout, `
Where does a key go, and does every node agree?
  %s route alice --admin-url http://%s
  %s status --admin-url http://%s

Ctrl-C stops everything.
`, self, admins[0], self, admins[len(admins)-1])

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	stop()
	fmt.Fprintln(stdout, "\nstopping the demo mesh...")
	sctx, cancel := context.WithTimeout(context.Background(), m.ShutdownTimeout())
	defer cancel()
	if err := m.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "meshlb demo: shutdown: %v\n", err)
		return 1
	}
	return 0
}
