# The two commands README.md promises: `make run` and `make test`.
GO        ?= go
TESTFLAGS ?=
BIN       ?= bin/relay
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run test test-go test-js build bench vet docs proto

run:
	$(GO) run ./cmd/relay serve

# vet, every Go test with the race detector, then the JS client's unit and
# end-to-end tests (real relay binary, headless Chromium, wx shim).
test: vet test-go test-js

test-go:
	$(GO) test -race -count=1 $(TESTFLAGS) ./...

test-js:
	clients/js/scripts/ci.sh

vet:
	$(GO) vet ./...

# Load test: relay (wire v1 and seed) against a minimal gorilla/websocket
# relay, pinned to one core each side; prints throughput, CPU per message,
# latency percentiles and RSS per idle connection, with ratios.
bench: build
	$(GO) run ./cmd/relay-bench -relay $(BIN)

# Regenerate docs/config.md, docs/handlers/ and relay.schema.json from the code.
docs:
	$(GO) run ./cmd/relay docs

# Regenerate the plugin protocol's Go code (committed; needs protoc: apt-get
# install -y protobuf-compiler libprotobuf-dev).
proto:
	$(MAKE) -C plugins proto

# The static build the Dockerfile runs too.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/relay
