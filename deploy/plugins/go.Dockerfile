# relay's image plus a Go plugin: the example enricher, built from this
# repository. For your own plugin, replace the build stage's COPY and build
# with your module (it imports github.com/pairrelay/relay/plugins/sdk).
#
#   docker build -t relay .                                   # relay's image first
#   docker build -f deploy/plugins/go.Dockerfile -t relay-go-plugin .
ARG RELAY_IMAGE=relay:latest
ARG GO_IMAGE=golang:1.26

FROM ${GO_IMAGE} AS plugin
ARG GOPROXY=https://proxy.golang.org,direct
ENV GOPROXY=${GOPROXY}
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static, like relay: the runtime image has no libc.
RUN CGO_ENABLED=0 go build -trimpath -o /out/enricher ./plugins/examples/enricher

FROM ${RELAY_IMAGE}
COPY --from=plugin /out/enricher /plugins/enricher
COPY deploy/plugins/go.relay.yaml /relay.yaml
