# Multi-stage build: a static binary on distroless, running as non-root.
# The build step is `make build`, the same command .ci/run executes.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make build BIN=/out/relay VERSION=docker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relay /relay
COPY relay.yaml /relay.yaml
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/relay", "serve", "-c", "/relay.yaml"]
