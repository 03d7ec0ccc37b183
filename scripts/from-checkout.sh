#!/bin/sh
# Uses relay's SDKs from this checkout exactly as docs/plugins.md and
# clients/js/README.md tell users to until they are published, each in a
# fresh temporary directory outside the repository:
#
#   1. a Go plugin whose go.mod replaces github.com/pairrelay/relay with the checkout;
#   2. the same plugin in a Go workspace with the checkout;
#   3. a Node.js plugin with @pairrelay/plugin-sdk as a file: dependency (install-links);
#   4. the same with the SDK from npm pack;
#   5. @pairrelay/client as a file: dependency and from npm pack, imported by a script.
#
# Each plugin is built and run through a route by `relay test`. Needs go,
# node and npm; reaches only the Go module proxy and the npm registry (for
# the SDKs' dependencies). clients/js/scripts/ci.sh (make test) runs it.
#
#   scripts/from-checkout.sh
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/relay-from-checkout-XXXXXX")
trap 'rm -rf "$work"' EXIT
step() { printf '\nfrom-checkout: %s\n' "$*"; }

relay="$work/bin/relay"
step "building relay"
(cd "$repo" && go build -o "$relay" ./cmd/relay)
# The module cache is written read-only; the trap must be able to remove it.
export GOFLAGS="-mod=mod -modcacherw"

# The plugin, its relay.yaml and the route test every variant runs.
write_go_plugin() {
	mkdir -p "$1"
	cat >"$1/main.go" <<'GO'
package main

import (
	"context"

	"github.com/pairrelay/relay/plugins/sdk"
)

type stamp struct{}

func (s *stamp) Configure(config []byte) error { return sdk.DecodeConfig(config, s) }

func (s *stamp) Handle(ctx context.Context, m *sdk.Message) ([]*sdk.Message, error) {
	var data map[string]any
	if err := m.DecodeData(&data); err != nil {
		return nil, sdk.Reject("invalid_data", "data must be an object")
	}
	data["stamped"] = "go"
	return []*sdk.Message{m}, m.SetData(data)
}

func main() { sdk.Serve(&stamp{}) }
GO
}

write_route() { # dir, command, args, stamp
	cat >"$1/relay.yaml" <<YAML
envs: {h5: {}, miniapp: {}}
plugins:
  - name: stamp
    command: $2
    args: $3
routes:
  - match: {type: "*"}
    on_error: reject
    handlers: [{handler: plugin, plugin: stamp}]
YAML
	cat >"$1/relay.test.yaml" <<YAML
tests:
  - name: the plugin stamps a message on its way
    input: {from: h5, type: addMaterial, data: {id: 1}}
    output: [{to: [miniapp], data: {id: 1, stamped: $4}}]
  - name: and refuses data that is not an object
    input: {from: h5, type: addMaterial, data: [1]}
    reject: {code: invalid_data}
YAML
}

step "Go plugin, go.mod replace"
d="$work/go-replace"
write_go_plugin "$d"
(
	cd "$d"
	go mod init example.com/stamp >/dev/null 2>&1
	go mod edit -require=github.com/pairrelay/relay@v0.0.0-00010101000000-000000000000 \
		-replace=github.com/pairrelay/relay="$repo"
	go mod tidy
	go build -o stamp .
)
write_route "$d" ./stamp "[]" go
(cd "$d" && "$relay" test)

step "Go plugin, go.work with the checkout"
d="$work/go-work"
write_go_plugin "$d/stamp"
(
	cd "$d/stamp"
	go mod init example.com/stamp >/dev/null 2>&1
	cd "$d"
	# The workspace provides github.com/pairrelay/relay: no require, and the
	# checkout's go.sum serves the SDK's dependencies.
	go work init ./stamp "$repo"
	GOFLAGS=-modcacherw go build -o stamp/stamp ./stamp
)
write_route "$d/stamp" ./stamp "[]" go
(cd "$d/stamp" && "$relay" test)

write_node_plugin() {
	mkdir -p "$1"
	cat >"$1/index.js" <<'JS'
'use strict';
const { serve, reject } = require('@pairrelay/plugin-sdk');
const plugin = {
  handle(msg) {
    if (typeof msg.data !== 'object' || msg.data === null || Array.isArray(msg.data)) {
      return reject('invalid_data', 'data must be an object');
    }
    msg.data.stamped = 'node';
    return msg;
  },
};
if (require.main === module) serve(plugin);
module.exports = plugin;
JS
	printf '{"name":"stamp","version":"1.0.0","private":true}\n' >"$1/package.json"
	write_route "$1" node "[index.js]" node
}

step "Node plugin, file: dependency (install-links)"
d="$work/node-file"
write_node_plugin "$d"
(cd "$d" && npm install --no-audit --no-fund --install-links "$repo/plugins/sdk-node" && "$relay" test)

step "Node plugin, npm pack"
d="$work/node-pack"
write_node_plugin "$d"
(cd "$repo/plugins/sdk-node" && npm pack --silent --pack-destination "$work" >/dev/null)
(cd "$d" && npm install --no-audit --no-fund "$work"/pairrelay-plugin-sdk-*.tgz && "$relay" test)

step "@pairrelay/client, file: dependency and npm pack"
if [ ! -f "$repo/clients/js/dist/index.mjs" ]; then
	(cd "$repo/clients/js" && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run build)
fi
(cd "$repo/clients/js" && npm pack --silent --pack-destination "$work" >/dev/null)
for how in file pack; do
	d="$work/client-$how"
	mkdir -p "$d"
	printf '{"name":"app","version":"1.0.0","private":true,"type":"module"}\n' >"$d/package.json"
	if [ "$how" = file ]; then
		spec="$repo/clients/js"
	else
		spec=$(ls "$work"/pairrelay-client-*.tgz)
	fi
	cat >"$d/app.mjs" <<'JS'
import { createClient, RelayError, CloseCode } from '@pairrelay/client';
import { createRequire } from 'node:module';
const cjs = createRequire(import.meta.url)('@pairrelay/client');
if (typeof createClient !== 'function' || typeof cjs.createClient !== 'function') throw new Error('createClient missing');
if (CloseCode.Replaced !== 4502 || !(new RelayError('x', 'y') instanceof Error)) throw new Error('exports wrong');
console.log('app: @pairrelay/client imports (ESM and CommonJS)');
JS
	(cd "$d" && npm install --no-audit --no-fund --install-links "$spec" && node app.mjs)
done

step "all ways work"
