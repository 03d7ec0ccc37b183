# relay's image: a static binary on a small base, running as non-root.
#
# Build arguments (docs/deploy/README.md has values that work from mainland
# China, where gcr.io and proxy.golang.org cannot be reached):
#   VERSION        what `relay version` prints
#   GO_IMAGE       the image that builds relay (needs make)
#   RUNTIME_IMAGE  the image relay runs on
#   GOPROXY        the Go module proxy the build downloads modules through
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t relay .
ARG GO_IMAGE=golang:1.26
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
ARG GOPROXY=https://proxy.golang.org,direct
ARG VERSION=dev
ENV GOPROXY=${GOPROXY}
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The build step is `make build`, the same command .ci/run executes.
RUN make build BIN=/out/relay VERSION=${VERSION}

FROM ${RUNTIME_IMAGE}
# The build image's CA bundle, so that rediss://, JWKS and webhook URLs work
# on any runtime base (scratch has none).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/relay /relay
# Built-in config: the shipped relay.yaml (any Origin, envs h5 and miniapp,
# memory backplane unless RELAY_BACKPLANE=redis). Mount your own over it or
# pass `serve -c /path/to/relay.yaml` (docs/deploy/README.md).
COPY relay.yaml /relay.yaml
# The nonroot user of distroless, by number so that bases without that name
# (scratch, alpine) run relay unprivileged too.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/relay"]
CMD ["serve", "-c", "/relay.yaml"]
