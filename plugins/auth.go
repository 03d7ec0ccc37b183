package plugins

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pairrelay/relay/auth"
	"github.com/pairrelay/relay/config"
	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
)

func init() { auth.Register(config.AuthPlugin, newAuthProvider) }

// maxAuthKey is the longest pairing key a plugin may name, as for the other providers.
const maxAuthKey = 256

// authProvider is auth provider plugin: a plugin process's Authenticate
// call decides on each connection.
type authProvider struct {
	name    string
	proc    *process
	headers []string
	timeout time.Duration
	log     *slog.Logger
}

func newAuthProvider(cfg config.Auth, at string, opts auth.Options) (auth.Provider, error) {
	pc := cfg.Plugin
	var entry *config.Plugin
	if opts.Config != nil {
		for i := range opts.Config.Plugins {
			if opts.Config.Plugins[i].Name == pc.Name {
				entry = &opts.Config.Plugins[i]
			}
		}
	}
	if entry == nil {
		return nil, fmt.Errorf("%s.plugin.name: %q is not defined in plugins:", at, pc.Name)
	}
	cfgJSON, err := configJSON(pc.Config)
	if err != nil {
		return nil, fmt.Errorf("%s.plugin.config: %v", at, err)
	}
	def, err := newDefinition(entry, opts.Dir, cfgJSON)
	if err != nil {
		return nil, fmt.Errorf("%s: plugin %s: %v", at, pc.Name, err)
	}
	// The answer bound of a handler with the default max_messages, so that a
	// route and auth using the same plugin and config share its process.
	maxFrame := config.Default().Limits.MaxFrameBytes
	if opts.Config.Limits.MaxFrameBytes > 0 {
		maxFrame = opts.Config.Limits.MaxFrameBytes
	}
	def.MaxAnswer = maxAnswerBytes(maxFrame, 100)
	log := opts.Log.With("plugin", pc.Name)
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout+configureTimeout)
	defer cancel()
	proc, err := acquire(ctx, def, log)
	if err != nil {
		return nil, fmt.Errorf("%s: plugin %s: %v", at, pc.Name, err)
	}
	return &authProvider{name: pc.Name, proc: proc, headers: pc.Headers, timeout: pc.Timeout, log: log}, nil
}

func (a *authProvider) Authenticated() bool { return true }

// Headers names the request headers the plugin is given.
func (a *authProvider) Headers() []string { return a.headers }

// Close gives the plugin process back; the last user stops it.
func (a *authProvider) Close() { release(a.proc) }

// Authenticate asks the plugin. Anything but a well-formed identity or
// refusal refuses the connection and is logged: the client learns only
// that it was refused.
func (a *authProvider) Authenticate(ctx context.Context, req *auth.Request) (*auth.Identity, error) {
	id, err := a.ask(ctx, req)
	if err != nil {
		if _, refused := err.(*auth.Error); !refused {
			a.log.Warn("auth: the plugin's check failed", "err", err.Error())
		}
		return nil, err
	}
	return id, nil
}

func (a *authProvider) ask(ctx context.Context, req *auth.Request) (*auth.Identity, error) {
	inst := a.proc.live.Load()
	if inst == nil {
		return nil, a.proc.down()
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	preq := &pb.AuthenticateRequest{Credential: req.Credential, Env: req.Env, Ip: req.IP, Origin: req.Origin,
		TimeoutMs: a.timeout.Milliseconds()}
	for _, h := range a.headers {
		if req.Header == nil {
			break
		}
		if v := req.Header(h); v != "" {
			if preq.Headers == nil {
				preq.Headers = map[string]string{}
			}
			preq.Headers[h] = v
		}
	}
	resp, err := inst.rpc.Authenticate(ctx, preq)
	switch {
	case status.Code(err) == codes.Unimplemented:
		return nil, fmt.Errorf("plugin %s does not implement Authenticate", a.name)
	case err != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("plugin %s gave no answer within %s", a.name, a.timeout)
	case err != nil:
		return nil, fmt.Errorf("plugin %s: %v", a.name, err)
	}
	switch r := resp.GetResult().(type) {
	case *pb.AuthenticateResponse_Identity:
		return a.identity(r.Identity)
	case *pb.AuthenticateResponse_Refuse:
		code := r.Refuse.GetCode()
		if code != "token_expired" {
			code = "unauthorized"
		}
		msg := r.Refuse.GetMessage()
		if msg == "" {
			msg = "the credential was refused"
		}
		return nil, &auth.Error{Code: code, Message: msg}
	case *pb.AuthenticateResponse_Error:
		return nil, fmt.Errorf("plugin %s failed: %s", a.name, r.Error.GetMessage())
	}
	return nil, fmt.Errorf("plugin %s answered Authenticate without a result", a.name)
}

func (a *authProvider) identity(pi *pb.Identity) (*auth.Identity, error) {
	key := pi.GetKey()
	if key == "" || len(key) > maxAuthKey {
		return nil, fmt.Errorf("plugin %s answered a key of %d bytes; want 1 to %d", a.name, len(key), maxAuthKey)
	}
	id := &auth.Identity{Key: key}
	if pi.GetHasEnvs() {
		id.Envs = append([]string{}, pi.GetEnvs()...)
		for _, env := range id.Envs {
			if !config.ValidEnvName(env) {
				return nil, fmt.Errorf("plugin %s answered envs with %q, which is not an env name", a.name, env)
			}
		}
	}
	if ms := pi.GetExpiresAt(); ms != 0 {
		id.Expires = time.UnixMilli(ms)
		if !id.Expires.After(time.Now()) {
			return nil, &auth.Error{Code: "token_expired", Message: "the credential has expired: get a new one"}
		}
	}
	if c := pi.GetClaims(); len(c) > 0 {
		if err := json.Unmarshal(c, &id.Claims); err != nil || id.Claims == nil {
			return nil, fmt.Errorf("plugin %s answered claims that are not a JSON object", a.name)
		}
	}
	return id, nil
}
