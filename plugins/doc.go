// Package plugins runs relay's external message plugins: processes that
// speak the relayplugin.v1 gRPC protocol through hashicorp/go-plugin, used
// in routes as {handler: plugin, plugin: NAME, config: {...}}. Importing it
// registers the plugin handler:
//
//	import _ "github.com/pairrelay/relay/plugins"
//
// The host starts each plugin when a pipeline needs it (so relay check and
// relay serve fail with the plugin's name and reason when it cannot start
// or refuses its config), logs what it prints with its name, restarts it
// when it crashes (at once, then with a backoff of at most a second), shares
// one process between the routes and the reloaded pipelines that use the
// same plugin with the same config, and stops it when no pipeline uses it
// any more. A plugin dies with relay, even when relay is killed (its
// parent-death signal is SIGKILL).
//
// Messages of every session travel over one bidirectional stream per
// process, matched by call id: a slow message never holds up another, and a
// plugin that hangs meets the route's timeout. While a plugin is down its
// calls fail at once, and the route's on_error decides.
//
// Plugin authors import plugins/sdk (Go) or implement the protocol in
// plugins/internal/proto (any language); see docs/plugins.md.
package plugins
