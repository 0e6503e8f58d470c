SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -euc
MAKEFLAGS += --warn-undefined-variables
.DEFAULT_GOAL := build

GO ?= go
BIN := bin/meshlb
PKGS := ./...

# Build the meshlb binary into bin/.
build:
	$(GO) build -o $(BIN) ./cmd/meshlb

# Run 3 nodes and 3 echo backends on loopback, with a page to watch sessions stick (Ctrl-C stops it).
demo: build
	./$(BIN) demo

# Everything CI runs: lint, then every test with the race detector.
test: lint race

# All tests with the race detector, uncached.
race:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# gofmt, go vet (here, and for macOS and Windows: the epoll relay is Linux-only, the rest must build everywhere), staticcheck and a go.mod tidiness check.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	GOOS=darwin $(GO) vet $(PKGS)
	GOOS=windows $(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)
	@cp go.mod /tmp/meshlb-go.mod.$$$$ && cp go.sum /tmp/meshlb-go.sum.$$$$ && $(GO) mod tidy && \
	  if ! diff -q go.mod /tmp/meshlb-go.mod.$$$$ >/dev/null || ! diff -q go.sum /tmp/meshlb-go.sum.$$$$ >/dev/null; then \
	    echo "go mod tidy changed go.mod/go.sum: commit the tidy result"; rm -f /tmp/meshlb-go.*.$$$$; exit 1; fi; \
	  rm -f /tmp/meshlb-go.*.$$$$

# Benchmarks: ring figures, gossip/mesh convergence, then meshlb beside HAProxy and NGINX (PROXYBENCH_FLAGS).
PROXYBENCH_FLAGS ?=
bench: build bench-tools
	MESHLB_RING_FIGURES=1 $(GO) test -run 'TestRingFigures' -bench 'Locate|Build' -benchmem -count 1 ./ring/
	$(GO) test -run '^$$' -bench 'Convergence' -benchtime 5x -timeout 30m ./node/
	ulimit -n 40000 2>/dev/null || ulimit -n $$(ulimit -Hn); $(GO) run ./lab/bench/proxybench --meshlb $(BIN) $(PROXYBENCH_FLAGS)

# Convergence at scale: 100 nodes in one process, 300 backends, v2 ring: time until every ring agrees, each node's build time.
bench-convergence:
	$(GO) test -run '^$$' -bench 'Convergence/ring=default/N=100/backends=300' -benchtime 5x -timeout 30m ./node/

# The reconnect storm alone: STORM sessions over a 3-node mesh, kill -9 of one node, its clients back through the
# others; the same reconnects at once at HAProxy, NGINX and one node (make bench runs it too).
STORM ?= 30000
bench-storm: build bench-tools
	ulimit -n 40000 2>/dev/null || ulimit -n $$(ulimit -Hn); $(GO) run ./lab/bench/proxybench --meshlb $(BIN) --storm-only --storm $(STORM)

# Install haproxy, nginx (the proxy comparison) and strace (system calls per handshake) when missing (apt-get).
bench-tools:
	@if ! command -v haproxy >/dev/null || ! command -v nginx >/dev/null || ! command -v strace >/dev/null; then \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y haproxy nginx strace; \
	fi

# Go benchmarks of the hot paths (key, ring lookup, handshake, relay); compare runs with benchstat.
BENCHCOUNT ?= 10
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) ./router/ ./ring/ | tee bench-go.txt

# WebSocket proxy: RSS per idle WebSocket, echo msg/s and CPU per message, direct vs via a node (WSBENCH_FLAGS for more).
WSBENCH_FLAGS ?=
bench-ws: build
	$(GO) run ./lab/bench/wsbench --meshlb $(BIN) $(WSBENCH_FLAGS)

# Short fuzzing of every parser of untrusted bytes (FUZZTIME per target).
FUZZTIME ?= 20s
fuzz:
	@for pkg in ./ring/ ./gossip/ ./health/ ./config/ ./router/ ./node/ ./meshdns/ ./tlsconf/ ./meshacme/; do \
	  for t in $$($(GO) test -list 'Fuzz.*' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

# Health figures: a killed backend out of / back into 5 rings, 20 times (prints p50/p99).
bench-health:
	MESHLB_HEALTH_TRIALS=20 $(GO) test -run 'TestHealthEjectAndRestore' -count=1 -v -timeout 30m ./node/ | grep -v '^ *writer.go'

# The long form of a test in make test: one node that can't reach one backend changes no ring for 10 minutes
# (in virtual time in health/, in real time over gossip in node/).
SOAK ?= 10m
soak-health:
	MESHLB_HEALTH_SOAK=$(SOAK) $(GO) test -run 'TestOneNodeCannotReachBackend' -count=1 -v -timeout 60m ./health/ ./node/ | grep -v '^ *writer.go'

# Seeded chaos soak in network namespaces (root): kills, restarts, freezes, partitions while meshlb bench checks.
CHAOS_MINUTES ?= 5
CHAOS_SEED ?= 0
# (built, not go run: go run turns the soak's exit 77, "can't run here", into 1)
chaos: build
	$(GO) build -o bin/chaos ./lab/chaos
	CHAOS_MINUTES=$(CHAOS_MINUTES) CHAOS_SEED=$(CHAOS_SEED) bin/chaos --meshlb $(BIN)

# Attack campaign: every hostile class ~ATTACK_TRIES times against a built node, resource checks after each (ATTACK_FLAGS).
ATTACK_TRIES ?= 1000
ATTACK_FLAGS ?=
# (built, not go run: go run turns the exit 77, "can't run here", into 1)
attack: build
	$(GO) build -o bin/attack ./lab/attack
	bin/attack --meshlb $(BIN) --tries $(ATTACK_TRIES) --strict $(ATTACK_FLAGS)

# Soak (not in CI): SOAK_MINUTES of steady WebSocket load with node and backend kills; n0's figures every minute.
SOAK_MINUTES ?= 60
soak: build
	$(GO) build -o bin/attack ./lab/attack
	SOAK_MINUTES=$(SOAK_MINUTES) bin/attack soak --meshlb $(BIN)

# DNS figures in network namespaces (root): 10 kills, then one chaos run through a static list and one through the mesh's DNS.
bench-dns:
	MESHLB_DNS_KILLS=10 MESHLB_DNS_BENCH=1 $(GO) test -run 'TestNetnsDNS' -count=1 -v -timeout 20m ./integration/ | grep -v '^ *writer.go'

IMAGE ?= meshlb:dev
# A static binary and the $(IMAGE) image FROM scratch (no registry needed); deploy/compose.yaml runs it.
image:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/docker/meshlb ./cmd/meshlb
	docker build -t $(IMAGE) .

# Remove build output.
clean:
	rm -rf bin

.PHONY: build demo test race lint bench bench-convergence bench-storm bench-tools bench-go bench-ws bench-health soak-health bench-dns fuzz chaos attack soak image clean
