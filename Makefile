# The two commands README.md promises: `make run` and `make test`.
GO        ?= go
TESTFLAGS ?=
BIN       ?= bin/relay
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: run test test-go test-js test-attack deps build bench vet docs proto from-checkout

run:
	$(GO) run ./cmd/relay serve

# vet, every Go test with the race detector, then the JS client's unit and
# end-to-end tests (real relay binary, headless Chromium, wx shim).
test: deps vet test-go test-js test-attack

# The tests run the real things: redis-server, headless Chromium, Node.js,
# and promtool (Debian's prometheus package) for the alert rules in deploy/.
# As root on Debian the missing ones are installed; elsewhere the command to
# install them is printed and make stops.
deps:
	@pkgs=""; \
	command -v redis-server >/dev/null 2>&1 || pkgs="$$pkgs redis-server"; \
	command -v chromium >/dev/null 2>&1 || pkgs="$$pkgs chromium"; \
	command -v node >/dev/null 2>&1 || pkgs="$$pkgs nodejs"; \
	command -v npm >/dev/null 2>&1 || pkgs="$$pkgs npm"; \
	command -v promtool >/dev/null 2>&1 || pkgs="$$pkgs prometheus"; \
	if [ -z "$$pkgs" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make deps: installing$$pkgs"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; \
	else \
		echo "make test needs:$$pkgs (Debian: sudo apt-get install -y$$pkgs)" >&2; exit 1; \
	fi

test-go:
	$(GO) test -race -count=1 $(TESTFLAGS) $$($(GO) list ./... | grep -v /internal/attacktest)

# The attack suite measures an unrelated pair's latency while relay is
# flooded, so it runs last and alone: beside other packages' tests on a
# 2-core machine it would measure them.
test-attack:
	$(GO) test -race -count=1 -p 1 $(TESTFLAGS) ./internal/attacktest

test-js:
	clients/js/scripts/ci.sh

# The SDKs used from this checkout as docs/plugins.md and clients/js/README.md
# say, in a temporary directory (test-js runs it too).
from-checkout:
	scripts/from-checkout.sh

vet:
	$(GO) vet ./...

# Load test: relay (wire v1 and seed) against a minimal gorilla/websocket
# relay, pinned to one core each side; prints throughput, CPU per message,
# latency percentiles and RSS per idle connection, with ratios.
bench: build
	$(GO) run ./cmd/relay-bench -relay $(BIN)

# Regenerate docs/config.md, docs/handlers/ and relay.schema.json from the code.
docs:
	$(GO) run ./cmd/relay docs -o .

# Regenerate the plugin protocol's Go code (committed; needs protoc: apt-get
# install -y protobuf-compiler libprotobuf-dev).
proto:
	$(MAKE) -C plugins proto

# The static build the Dockerfile runs too.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/relay
