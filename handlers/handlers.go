// Package handlers holds relay's built-in message handlers: validate,
// transform, filter, rate_limit, webhook, log and drop. Importing it for its
// side effects registers them all:
//
//	import _ "github.com/pairrelay/relay/handlers"
//
// # Writing a handler
//
// A handler is one step of a route's chain. It implements core.Handler:
//
//	Handle(ctx context.Context, m *core.Message) ([]*core.Message, error)
//
// and its result decides what happens next:
//
//   - one message: the message goes on (the same one, or a changed one);
//   - no message (nil, nil): the message is dropped, silently;
//   - several messages: fan-out, each goes through the rest of the chain;
//   - core.Reject(code, format, args...): a deliberate refusal, the sender
//     gets relay.error with that code whatever the route's on_error says;
//   - any other error: a failure (an endpoint is down, data cannot be
//     decoded), which the route's on_error turns into reject, pass or drop.
//
// Handle runs concurrently for many messages and must honour ctx, which
// carries the route's timeout. A handler that only computes and never waits
// (no network, no locks held for long) implements core.NonBlocking, and the
// host then calls it without arming the timeout, which would cost more than
// the handler. m.Resolve has already been called, so Type and
// Data are set. A handler that changes Data assigns a new slice and never
// writes into the old one, which may be shared; it changes nothing in m
// before it knows it will succeed, so that on_error: pass really passes the
// message unchanged. The token (m.Token) must never be logged or sent
// anywhere in clear.
//
// # Registering
//
// Each handler lives in a file of its own and registers itself from init:
//
//	func init() {
//		core.RegisterHandler(core.HandlerSpec{
//			Name:    "drop",
//			Summary: "Drops every message.",
//			New:     func() core.Handler { return &Drop{} },
//		})
//	}
//
// New returns a fresh handler: a pointer to its config struct holding its
// defaults. The exported fields with a yaml tag are its settings, decoded
// strictly (an unknown key or a wrong type is an error with file and line).
// Every setting carries a doc tag, and a default tag when it has a default:
// relay docs generates the handler's reference page from them, so they are
// written for users, not for programmers.
//
//	type Filter struct {
//		Expr   string `yaml:"expr" doc:"Boolean expression over the message…"`
//		Action string `yaml:"action" doc:"keep or drop …" default:"keep"`
//	}
//
// # Lifecycle
//
// core.BuildHandler runs New → strict decode → Provision → Validate; the
// handler then serves Handle calls until Close.
//
//   - Provision(ctx, core.ProvisionEnv) (optional, core.Provisioner) does the
//     expensive setup once: compile schemas and expressions, open files
//     (relative to env.BaseDir, the directory of relay.yaml), build HTTP
//     clients, keep env.Log. Everything a message would otherwise redo goes
//     here, so that a broken setting fails at startup (and in relay check),
//     not on the first message.
//   - Validate() (optional, core.Validator) checks the settings without side
//     effects.
//   - Close() (optional, io.Closer) releases what Provision took. It also
//     runs after a failed Provision, so it must cope with a half-built
//     handler.
//
// Errors from Provision and Validate say what is wrong and how to fix it;
// BuildHandler adds the file, line and handler they belong to.
//
// # Testing
//
// Build a handler the way relay does, from a YAML snippet, so that tests go
// through the registry and the strict decoder:
//
//	hc, _ := config.NewHandlerConfig("handler: filter\nexpr: type == 'a'", "test.yaml")
//	h, err := core.BuildHandler(ctx, &hc, core.ProvisionEnv{Log: slog.Default(), BaseDir: "testdata"})
package handlers
