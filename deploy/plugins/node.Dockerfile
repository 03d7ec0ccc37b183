# relay's image plus a Node.js plugin: the example node-enricher.
#
# relay's image is distroless/static: no Node.js, and no glibc or libstdc++
# that a copied node binary would need. relay is a static binary that runs
# anywhere, so this goes the other way round: Google's distroless Node.js
# image (node, its libraries, CA certificates, a nonroot user, no shell)
# with relay's binary copied in.
#
#   docker build -t relay .                                   # relay's image first
#   docker build -f deploy/plugins/node.Dockerfile -t relay-node-plugin .
ARG RELAY_IMAGE=relay:latest
ARG NODE_IMAGE=node:22-bookworm-slim
ARG NODE_RUNTIME_IMAGE=gcr.io/distroless/nodejs22-debian12:nonroot

FROM ${RELAY_IMAGE} AS relay

FROM ${NODE_IMAGE} AS plugin
# The example takes @pairrelay/plugin-sdk from ../../sdk-node (a file:
# dependency that .npmrc's install-links copies into node_modules with its
# own dependencies): the build keeps the repository's layout.
WORKDIR /src/plugins/examples/node-enricher
COPY plugins/sdk-node/ /src/plugins/sdk-node/
COPY plugins/examples/node-enricher/package.json plugins/examples/node-enricher/package-lock.json plugins/examples/node-enricher/.npmrc ./
RUN npm ci --omit=dev
COPY plugins/examples/node-enricher/ ./

FROM ${NODE_RUNTIME_IMAGE}
COPY --from=relay /relay /relay
COPY --from=plugin /src/plugins/examples/node-enricher /plugins/node-enricher
COPY deploy/plugins/node.relay.yaml /relay.yaml
USER 65532:65532
EXPOSE 8080
# The Node.js image's entrypoint is node; relay is the process here, and it
# starts node for the plugin.
ENTRYPOINT ["/relay"]
CMD ["serve", "-c", "/relay.yaml"]
