# The two commands README.md promises: `make run` and `make test`.
GO        ?= go
TESTFLAGS ?=
BIN       ?= bin/relay
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run test build bench vet

run:
	$(GO) run ./cmd/relay serve

# vet, then every test with the race detector.
test: vet
	$(GO) test -race -count=1 $(TESTFLAGS) ./...

vet:
	$(GO) vet ./...

# Load test: relay (wire v1 and seed) against a minimal gorilla/websocket
# relay, pinned to one core each side; prints throughput, CPU per message,
# latency percentiles and RSS per idle connection, with ratios.
bench: build
	$(GO) run ./cmd/relay-bench -relay $(BIN)

# The static build the Dockerfile runs too.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/relay
