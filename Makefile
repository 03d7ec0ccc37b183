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

# The static build the Dockerfile runs too.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/relay
