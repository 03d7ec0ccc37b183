package core

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"

	"github.com/pairrelay/relay/config"
)

// HandlerSpec registers a kind of handler under a name.
//
// New returns a fresh handler holding its defaults. The handler's exported
// fields with yaml tags are its settings, and their doc and default tags
// are its documentation: relay docs writes docs/handlers/NAME.md from them.
// The lifecycle is New → strict decode of the route entry's settings →
// Provision (if implemented) → Validate (if implemented) → Handle, and
// Close (if implemented) at the end, also after a failed Provision.
type HandlerSpec struct {
	Name    string
	Summary string
	New     func() Handler
}

// Provisioner is a handler that sets itself up after decoding: opens files,
// compiles schemas or expressions, starts clients.
type Provisioner interface {
	Provision(ctx context.Context, env ProvisionEnv) error
}

// Validator is a handler that checks its decoded, provisioned settings.
// Validate must not have side effects.
type Validator interface {
	Validate() error
}

// ProvisionEnv is what relay tells a handler while provisioning it.
type ProvisionEnv struct {
	Log     *slog.Logger // already carries the route and handler names
	Route   string
	BaseDir string         // directory of relay.yaml, for relative file paths
	Config  *config.Config // the whole configuration being built (plugins, for one)
	// Transport, when set, carries the handler's outgoing HTTP requests
	// (webhook) instead of the network: relay test answers them with a test
	// file's canned answers.
	Transport http.RoundTripper
}

// Reject is how a handler refuses a message on purpose: the sender gets
// relay.error with code and message, whatever the route's on_error says.
// Any other error from Handle is a failure, which on_error decides about.
func Reject(code, format string, args ...any) error {
	return &ClientError{Code: code, Message: fmt.Sprintf(format, args...)}
}

var registry struct {
	sync.RWMutex
	specs map[string]HandlerSpec
}

// RegisterHandler adds a kind of handler; it is meant for init functions and
// panics on a duplicate or incomplete spec.
func RegisterHandler(spec HandlerSpec) {
	if spec.Name == "" || spec.New == nil {
		panic("relay: RegisterHandler needs a name and New")
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.specs == nil {
		registry.specs = make(map[string]HandlerSpec)
	}
	if _, dup := registry.specs[spec.Name]; dup {
		panic("relay: handler " + spec.Name + " registered twice")
	}
	registry.specs[spec.Name] = spec
}

// LookupHandler returns the spec registered under name.
func LookupHandler(name string) (HandlerSpec, bool) {
	registry.RLock()
	defer registry.RUnlock()
	spec, ok := registry.specs[name]
	return spec, ok
}

// HandlerSpecs lists every registered handler, by name.
func HandlerSpecs() []HandlerSpec {
	registry.RLock()
	defer registry.RUnlock()
	specs := make([]HandlerSpec, 0, len(registry.specs))
	for _, s := range registry.specs {
		specs = append(specs, s)
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].Name < specs[j].Name })
	return specs
}

// BuildHandler makes a ready handler from its route entry. Errors name the
// entry (file:line, routes[i].handlers[j] and the handler). What a failed
// build provisioned is closed.
func BuildHandler(ctx context.Context, hc *config.HandlerConfig, env ProvisionEnv) (Handler, error) {
	where := func(err error) error {
		return fmt.Errorf("%s: %s (%s): %w", hc.Where(), hc.Path(), hc.Handler, err)
	}
	spec, ok := LookupHandler(hc.Handler)
	if !ok {
		return nil, where(fmt.Errorf("unknown handler %q (relay handlers lists them)", hc.Handler))
	}
	h := spec.New()
	if err := hc.Decode(h); err != nil {
		// Decode's problems carry their own file, line and path.
		return nil, err
	}
	if p, ok := h.(Provisioner); ok {
		if err := p.Provision(ctx, env); err != nil {
			closeHandler(h)
			return nil, where(err)
		}
	}
	if v, ok := h.(Validator); ok {
		if err := v.Validate(); err != nil {
			closeHandler(h)
			return nil, where(err)
		}
	}
	return h, nil
}

func closeHandler(h Handler) error {
	if c, ok := h.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
