// Package auth decides who may open a relay connection and which pairing key
// (the room two clients share) the connection gets. Providers register by
// name, like handlers; each env of relay.yaml uses one (config.Auth). The
// package knows nothing of HTTP servers: the server hands it a Request built
// from the upgrade request and gets an Identity or a refusal.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pairrelay/relay/config"
)

// Request is what a provider may look at: the credential the client
// presented (by any transport) and where the connection comes from.
type Request struct {
	Credential string
	Env        string
	IP         string
	Origin     string
	// Header returns a request header by name (any case); "" when absent.
	// nil: no headers (as if none were sent).
	Header func(name string) string
}

func (r *Request) header(name string) string {
	if r.Header == nil {
		return ""
	}
	return r.Header(name)
}

// Identity is what an admitted connection is. The server uses Key, never the
// credential, as the connection's room.
type Identity struct {
	Key     string         // pairing key: connections with the same key (and provider kind) share a room
	Envs    []string       // envs the holder may connect as; nil: any
	Claims  map[string]any // what handlers may see (the configured claims); nil: nothing
	Expires time.Time      // zero: does not expire
}

// EnvAllowed reports whether the identity may connect as env.
func (id *Identity) EnvAllowed(env string) bool {
	return id.Envs == nil || slices.Contains(id.Envs, env)
}

// Error is a refusal whose Code and Message can be shown to the client: they
// never hold the credential or a secret.
type Error struct {
	Code    string // unauthorized, token_expired
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func refuse(format string, args ...any) *Error {
	return &Error{Code: "unauthorized", Message: fmt.Sprintf(format, args...)}
}

// Provider admits or refuses connections.
type Provider interface {
	// Authenticate checks req. A refusal is an *Error; any other error is a
	// failure of the provider itself (the connection is refused all the same).
	Authenticate(ctx context.Context, req *Request) (*Identity, error)
	// Authenticated is false only for none, whose key is the client's own
	// unchecked token: such rooms never meet authenticated ones.
	Authenticated() bool
	// Close stops what the provider runs in the background.
	Close()
}

// HeaderReader is implemented by providers that read request headers: it
// names them, so that a server keeps only those for checks after the upgrade
// (a first-frame credential, a refresh).
type HeaderReader interface {
	Headers() []string
}

// Health is implemented by providers that depend on something that can fail
// after start (a JWKS URL). Problems lists what is wrong now; fatal means
// no credential can be verified at all.
type Health interface {
	Problems() (problems []string, fatal bool)
}

// Options is what providers may need from their surroundings.
type Options struct {
	Dir    string       // directory relative file names in the config start from
	Log    *slog.Logger // nil: discard
	Client *http.Client // for JWKS; nil: a client with a 10s timeout
	// Offline skips network fetches at build time (relay check): keys from
	// a URL are fetched when first needed.
	Offline bool
	// Config is the whole configuration being built (Build sets it), for
	// providers that refer to other sections (plugin: plugins:).
	Config *config.Config
}

// Factory builds a provider from its section of relay.yaml. at is the
// section's YAML path (auth, envs.h5.auth) for errors.
type Factory func(cfg config.Auth, at string, opts Options) (Provider, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Factory{}
)

// Register adds a provider under name; a second registration of one name panics.
func Register(name string, f Factory) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("auth: provider " + name + " registered twice")
	}
	registry[name] = f
}

func lookup(name string) (Factory, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	f, ok := registry[name]
	return f, ok
}

// Set is the providers of one configuration: the top-level one and each env
// that overrides it.
type Set struct {
	def           Provider
	envs          map[string]Provider
	authenticated bool
}

// Build makes the providers cfg asks for. On error nothing stays running.
func Build(cfg *config.Config, opts Options) (*Set, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	opts.Config = cfg
	s := &Set{envs: map[string]Provider{}}
	build := func(a config.Auth, at string) (Provider, error) {
		f, ok := lookup(a.Provider)
		if !ok {
			return nil, fmt.Errorf("%s.provider: unknown auth provider %q", at, a.Provider)
		}
		p, err := f(a, at, opts)
		if err != nil {
			return nil, err
		}
		if p.Authenticated() {
			s.authenticated = true
		}
		return p, nil
	}
	var err error
	if s.def, err = build(cfg.AuthFor(""), "auth"); err != nil {
		return nil, err
	}
	for _, env := range slices.Sorted(maps.Keys(cfg.Envs)) {
		if cfg.Envs[env].Auth.Provider == "" {
			continue
		}
		p, err := build(cfg.AuthFor(env), "envs."+env+".auth")
		if err != nil {
			s.Close()
			return nil, err
		}
		s.envs[env] = p
	}
	return s, nil
}

// None is a Set where every env uses provider none: relay without auth.
func None() *Set { return &Set{def: noneProvider{}} }

// For returns the provider of env (the top-level one for any env without its own).
func (s *Set) For(env string) Provider {
	if p, ok := s.envs[env]; ok {
		return p
	}
	return s.def
}

// AnyAuthenticated reports whether some env uses a provider other than none.
func (s *Set) AnyAuthenticated() bool { return s.authenticated }

// Unauthenticated lists what uses provider none: "" for the top level and
// the names of envs with their own none.
func (s *Set) Unauthenticated() []string {
	var out []string
	if !s.def.Authenticated() {
		out = append(out, "")
	}
	for _, env := range slices.Sorted(maps.Keys(s.envs)) {
		if !s.envs[env].Authenticated() {
			out = append(out, env)
		}
	}
	return out
}

// Problems gathers the health problems of every provider.
func (s *Set) Problems() (problems []string, fatal bool) {
	seen := map[string]bool{}
	for _, p := range s.all() {
		if h, ok := p.(Health); ok {
			ps, f := h.Problems()
			fatal = fatal || f
			for _, msg := range ps {
				if !seen[msg] {
					seen[msg] = true
					problems = append(problems, msg)
				}
			}
		}
	}
	sort.Strings(problems)
	return problems, fatal
}

func (s *Set) all() []Provider {
	out := []Provider{}
	if s.def != nil {
		out = append(out, s.def)
	}
	for _, env := range slices.Sorted(maps.Keys(s.envs)) {
		out = append(out, s.envs[env])
	}
	return out
}

// Close stops every provider.
func (s *Set) Close() {
	for _, p := range s.all() {
		p.Close()
	}
}

// AsError returns err's *Error, or a generic refusal that hides err (it may
// describe internals the client has no business seeing).
func AsError(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	return refuse("the credential could not be checked")
}

// noneProvider admits everyone; the presented token is the pairing key.
type noneProvider struct{}

func init() {
	Register(config.AuthNone, func(config.Auth, string, Options) (Provider, error) { return noneProvider{}, nil })
}

func (noneProvider) Authenticate(_ context.Context, req *Request) (*Identity, error) {
	if req.Credential == "" {
		return nil, refuse("a token is required")
	}
	return &Identity{Key: req.Credential}, nil
}

func (noneProvider) Authenticated() bool { return false }
func (noneProvider) Close()              {}

// trimNewline drops the line end editors add to a secret file.
func trimNewline(s string) string { return strings.TrimRight(s, "\r\n") }
