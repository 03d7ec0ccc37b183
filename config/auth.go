package config

import (
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Auth providers: who may connect, and which pairing key a connection gets.
const (
	AuthNone    = "none"    // the token is the pairing key, unchecked (the original relay)
	AuthJWT     = "jwt"     // a signed JWT; the pairing key is one of its claims
	AuthWebhook = "webhook" // your backend decides each connection (connect proxy)
	AuthWeChat  = "wechat"  // the WeChat Cloud Hosting gateway's identity headers
	AuthPlugin  = "plugin"  // a plugin process's Authenticate call decides
)

// AuthProviders lists the provider names relay.yaml accepts.
var AuthProviders = []string{AuthNone, AuthJWT, AuthWebhook, AuthWeChat, AuthPlugin}

// JWTAlgorithms are the alg values a jwt provider may accept. "none" is not
// one of them and never will be.
var JWTAlgorithms = []string{"HS256", "HS384", "HS512", "RS256", "PS256", "ES256", "EdDSA"}

// MinJWTSecretBytes is the shortest HS* secret accepted: RFC 7518 asks for a
// key at least as long as the hash, and a short one can be brute-forced from
// any token the attacker holds.
const MinJWTSecretBytes = 32

// Auth decides who may connect and which pairing key (the room two clients
// share) a connection gets.
type Auth struct {
	Provider string      `yaml:"provider" doc:"none (the token is the pairing key, unchecked: the original relay's behaviour), jwt (a signed JWT; the pairing key is one of its claims), webhook (your backend admits each connection and names its pairing key) wechat (the identity the WeChat Cloud Hosting gateway adds; the token is the pairing key) or plugin (a plugin of plugins: decides each connection with its Authenticate call). Empty: none at the top level; under envs.<env>.auth, the top-level auth."`
	JWT      JWTAuth     `yaml:"jwt" doc:"With provider jwt: how tokens are verified and what they grant."`
	Webhook  WebhookAuth `yaml:"webhook" doc:"With provider webhook: the backend asked about each connection."`
	WeChat   WeChatAuth  `yaml:"wechat" doc:"With provider wechat: which mini programs may connect."`
	Plugin   PluginAuth  `yaml:"plugin" doc:"With provider plugin: the plugin that decides."`
}

// PluginAuth configures the plugin provider.
type PluginAuth struct {
	Name    string        `yaml:"name" doc:"Name of the plugin in the plugins: section; it must implement Authenticate (the Go SDK's Authenticator). Must be set with provider plugin."`
	Config  any           `yaml:"config" doc:"Settings handed to the plugin (its Configure call) as JSON. The same plugin with the same config (and a route's default max_messages) shares one process with a route's plugin handler."`
	Headers []string      `yaml:"headers" doc:"Request headers passed on to the plugin (an allow-list; others never are)."`
	Timeout time.Duration `yaml:"timeout" doc:"Longest relay waits for the plugin's answer; past it the connection is refused." default:"3s"`
}

// WebhookAuth configures the webhook (connect proxy) provider.
type WebhookAuth struct {
	URL      string        `yaml:"url" doc:"https:// (or http://) endpoint relay POSTs {token, env, ip, origin, headers} to for each connection. 200 with {key, envs?, expires_at?, meta?} admits, 401 or 403 refuses; anything else, or no answer within timeout, refuses. Must be set with provider webhook."`
	Timeout  time.Duration `yaml:"timeout" doc:"Longest relay waits for the backend's answer; past it the connection is refused." default:"3s"`
	CacheTTL time.Duration `yaml:"cache_ttl" doc:"How long an answer (admit or refusal) is reused for the same credential and env without asking again. 0 asks every time." default:"30s"`
	Headers  []string      `yaml:"headers" doc:"Request headers passed on to the backend (an allow-list; others never are), such as User-Agent or X-WX-OPENID."`
	Secret   string        `yaml:"secret" doc:"Key of the X-Relay-Signature header (HMAC-SHA256 of the timestamp and the body) that lets the backend check a request comes from relay; at least 32 bytes. Write ${VAR}. Empty: requests are not signed."`
}

// WeChatAuth configures the wechat provider.
type WeChatAuth struct {
	AppIDs    []string      `yaml:"appids" doc:"Mini program AppIDs allowed to connect (X-WX-APPID, or X-WX-FROM-APPID with resource sharing). Must be set with provider wechat."`
	BindToken bool          `yaml:"bind_token" doc:"Bind each token to the first openid that uses it: another openid presenting the same token is refused. Bindings are kept per instance for bind_ttl."`
	BindTTL   time.Duration `yaml:"bind_ttl" doc:"How long a token stays bound to its openid after its last use." default:"24h"`
}

// JWTAuth configures the jwt provider.
type JWTAuth struct {
	Algorithms     []string      `yaml:"algorithms" doc:"alg values accepted: HS256, HS384, HS512, RS256, PS256, ES256, EdDSA. A token signed otherwise is refused; none is never accepted. Must be set with provider jwt."`
	Secret         string        `yaml:"secret" doc:"Shared secret for HS256/384/512, at least 32 bytes. Write ${VAR} to keep it out of the file. Set this or secret_file when an HS algorithm is listed."`
	SecretFile     string        `yaml:"secret_file" doc:"File holding the HS secret (relative to relay.yaml's directory); a trailing newline is ignored."`
	PublicKey      string        `yaml:"public_key" doc:"PEM public key (RSA, EC P-256 or Ed25519) for RS256, PS256, ES256 or EdDSA."`
	PublicKeyFile  string        `yaml:"public_key_file" doc:"File holding a PEM public key (relative to relay.yaml's directory)."`
	JWKSURL        string        `yaml:"jwks_url" doc:"https:// (or http://) URL of a JSON Web Key Set; tokens name their key with kid. Fetched at start, refreshed every jwks_refresh; an unknown kid fetches it again at most once per jwks_min_refetch. While the URL is unreachable the keys already fetched stay in use and /readyz reports it."`
	JWKSRefresh    time.Duration `yaml:"jwks_refresh" doc:"How often the JWKS is fetched again." default:"10m"`
	JWKSMinRefetch time.Duration `yaml:"jwks_min_refetch" doc:"Least time between two fetches caused by tokens naming an unknown kid (or retries after a failed fetch)." default:"30s"`
	Issuer         string        `yaml:"issuer" doc:"When set, the iss claim must equal it."`
	Audience       string        `yaml:"audience" doc:"When set, the aud claim must contain it."`
	Leeway         time.Duration `yaml:"leeway" doc:"Clock skew allowed when checking exp, nbf and iat." default:"0s"`
	KeyClaim       string        `yaml:"key_claim" doc:"Claim holding the pairing key: two connections whose tokens carry the same value here share a room, whatever else differs in their tokens." default:"sub"`
	EnvsClaim      string        `yaml:"envs_claim" doc:"Claim listing the envs the holder may connect as (a string or a list of strings). Empty: any env. When set, a token without the claim is refused."`
	Claims         []string      `yaml:"claims" doc:"Claims handed to handlers and plugins with each message the connection sends (Message.Claims). Empty: none; the token itself never is."`
}

// applyDefaults fills what an auth section left out; Default() holds the
// same values for the top level, and an env's own auth gets them here.
func (a *Auth) applyDefaults() {
	if a.Webhook.Timeout == 0 {
		a.Webhook.Timeout = 3 * time.Second
	}
	if a.Webhook.CacheTTL == 0 {
		a.Webhook.CacheTTL = 30 * time.Second
	}
	if a.Plugin.Timeout == 0 {
		a.Plugin.Timeout = 3 * time.Second
	}
	if a.WeChat.BindTTL == 0 {
		a.WeChat.BindTTL = 24 * time.Hour
	}
	if a.JWT.JWKSRefresh == 0 {
		a.JWT.JWKSRefresh = 10 * time.Minute
	}
	if a.JWT.JWKSMinRefetch == 0 {
		a.JWT.JWKSMinRefetch = 30 * time.Second
	}
	if a.JWT.KeyClaim == "" {
		a.JWT.KeyClaim = "sub"
	}
}

func defaultAuth() Auth {
	var a Auth
	a.applyDefaults()
	return a
}

// AuthFor returns the auth that applies to env: the env's own when it names
// a provider, else the top-level one. Provider is never empty in the result.
func (c *Config) AuthFor(env string) Auth {
	a := c.Auth
	if e, ok := c.Envs[env]; ok && e.Auth.Provider != "" {
		a = e.Auth
	}
	a.applyDefaults()
	if a.Provider == "" {
		a.Provider = AuthNone
	}
	return a
}

// UsesAuth reports whether any env uses a provider other than none.
func (c *Config) UsesAuth() bool {
	if c.AuthFor("").Provider != AuthNone {
		return true
	}
	for _, e := range c.Envs {
		if e.Auth.Provider != "" && e.Auth.Provider != AuthNone {
			return true
		}
	}
	return false
}

// authProblems checks the top-level auth and every env's.
func (c *Config) authProblems() Problems {
	ps := authSectionProblems("auth", c.Auth, false)
	ps = append(ps, c.authPluginProblems("auth", c.Auth)...)
	for _, name := range slices.Sorted(maps.Keys(c.Envs)) {
		at := join(join("envs", name), "auth")
		ps = append(ps, authSectionProblems(at, c.Envs[name].Auth, true)...)
		ps = append(ps, c.authPluginProblems(at, c.Envs[name].Auth)...)
	}
	return ps
}

// authPluginProblems checks that provider plugin names an entry of plugins:.
func (c *Config) authPluginProblems(at string, a Auth) Problems {
	if a.Provider != AuthPlugin || a.Plugin.Name == "" {
		return nil
	}
	var names []string
	for _, pl := range c.Plugins {
		if pl.Name == a.Plugin.Name {
			return nil
		}
		names = append(names, pl.Name)
	}
	msg := fmt.Sprintf("%q is not defined: plugins: is empty", a.Plugin.Name)
	if len(names) > 0 {
		msg = fmt.Sprintf("%q is not defined in plugins: (defined: %s)", a.Plugin.Name, strings.Join(names, ", "))
	}
	return Problems{{Path: join(join(at, "plugin"), "name"), Message: msg}}
}

func authSectionProblems(at string, a Auth, perEnv bool) Problems {
	var ps Problems
	add := func(key, format string, args ...any) {
		p := at
		for part := range strings.SplitSeq(key, ".") {
			name, idx, _ := strings.Cut(part, "[")
			if name != "" {
				p = join(p, name)
			}
			if idx != "" {
				p += "[" + idx
			}
		}
		ps = append(ps, Problem{Path: p, Message: fmt.Sprintf(format, args...)})
	}
	a.applyDefaults()
	// Settings of a provider that is not the chosen one would be silently
	// ignored.
	def := defaultAuth()
	var set []string
	for _, sec := range []struct {
		name  string
		isSet bool
	}{
		{AuthJWT, !reflect.DeepEqual(a.JWT, def.JWT)},
		{AuthWebhook, !reflect.DeepEqual(a.Webhook, def.Webhook)},
		{AuthWeChat, !reflect.DeepEqual(a.WeChat, def.WeChat)},
		{AuthPlugin, !reflect.DeepEqual(a.Plugin, def.Plugin)},
	} {
		if sec.isSet && sec.name != a.Provider {
			set = append(set, sec.name)
		}
	}
	switch {
	case len(set) > 0 && a.Provider == "" && perEnv:
		add("", "sets %s settings but no provider: set provider (without one the env uses the top-level auth)", strings.Join(set, " and "))
	case len(set) > 0 && a.Provider == "":
		add("", "sets %s settings but no provider: set provider", strings.Join(set, " and "))
	case len(set) > 0 && slices.Contains(AuthProviders, a.Provider):
		add("provider", "is %s, which ignores the %s settings: remove them or change provider", a.Provider, strings.Join(set, " and "))
	}
	switch a.Provider {
	case "", AuthNone:
		return ps
	case AuthJWT:
	case AuthWebhook:
		return append(ps, webhookProblems(a.Webhook, add)...)
	case AuthWeChat:
		return append(ps, wechatProblems(a.WeChat, add)...)
	case AuthPlugin:
		return append(ps, pluginAuthProblems(a.Plugin, add)...)
	default:
		add("provider", "must be %s, got %q", orList(AuthProviders), a.Provider)
		return ps
	}
	j := a.JWT
	jp := func(key string) string { return "jwt." + key }
	if len(j.Algorithms) == 0 {
		add(jp("algorithms"), "is required: list the alg values to accept, such as [HS256] or [RS256]")
	}
	var hmac, public bool
	for i, alg := range j.Algorithms {
		switch {
		case strings.EqualFold(alg, "none"):
			add(jp("algorithms")+"["+strconv.Itoa(i)+"]", "alg none (an unsigned token) is never accepted")
		case !slices.Contains(JWTAlgorithms, alg):
			add(jp("algorithms")+"["+strconv.Itoa(i)+"]", "must be one of %s, got %q", orList(JWTAlgorithms), alg)
		case strings.HasPrefix(alg, "HS"):
			hmac = true
		default:
			public = true
		}
	}
	// Values are never quoted back: they may be secrets from ${VAR}.
	switch {
	case j.Secret != "" && j.SecretFile != "":
		add(jp("secret"), "set secret or secret_file, not both")
	case hmac && j.Secret == "" && j.SecretFile == "":
		add(jp("algorithms"), "an HS algorithm needs jwt.secret (for example ${RELAY_JWT_SECRET}) or jwt.secret_file")
	case !hmac && j.Secret != "":
		add(jp("secret"), "is set but no HS algorithm is listed in algorithms")
	case !hmac && j.SecretFile != "":
		add(jp("secret_file"), "is set but no HS algorithm is listed in algorithms")
	case j.Secret != "" && len(j.Secret) < MinJWTSecretBytes:
		add(jp("secret"), "must be at least %d bytes, got %d", MinJWTSecretBytes, len(j.Secret))
	}
	switch {
	case j.PublicKey != "" && j.PublicKeyFile != "":
		add(jp("public_key"), "set public_key or public_key_file, not both")
	case public && j.PublicKey == "" && j.PublicKeyFile == "" && j.JWKSURL == "":
		add(jp("algorithms"), "RS256, PS256, ES256 and EdDSA need jwt.public_key, jwt.public_key_file or jwt.jwks_url")
	}
	if !public {
		for _, k := range []struct{ key, value string }{{"public_key", j.PublicKey}, {"public_key_file", j.PublicKeyFile}, {"jwks_url", j.JWKSURL}} {
			if k.value != "" {
				add(jp(k.key), "is set but no public-key algorithm (RS256, PS256, ES256, EdDSA) is listed in algorithms")
			}
		}
	}
	if j.JWKSURL != "" {
		if u, err := url.Parse(j.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			add(jp("jwks_url"), "must be an https:// or http:// URL")
		}
	}
	if j.JWKSRefresh < time.Second {
		add(jp("jwks_refresh"), "must be at least 1s, got %s", j.JWKSRefresh)
	}
	if j.JWKSMinRefetch < 0 {
		add(jp("jwks_min_refetch"), "must be at least 0, got %s", j.JWKSMinRefetch)
	}
	if j.Leeway < 0 || j.Leeway > time.Hour {
		add(jp("leeway"), "must be between 0s and 1h, got %s", j.Leeway)
	}
	if strings.TrimSpace(j.KeyClaim) == "" {
		add(jp("key_claim"), "must name a claim, such as sub")
	}
	for i, c := range j.Claims {
		if c == "" {
			add(jp("claims")+"["+strconv.Itoa(i)+"]", "must name a claim")
		}
	}
	return ps
}

func webhookProblems(w WebhookAuth, add func(key, format string, args ...any)) Problems {
	if w.URL == "" {
		add("provider", "webhook needs webhook.url: the endpoint that admits connections")
	} else if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		add("webhook.url", "must be an https:// or http:// URL")
	}
	if w.Timeout <= 0 || w.Timeout > time.Minute {
		add("webhook.timeout", "must be more than 0 and at most 1m, got %s", w.Timeout)
	}
	if w.CacheTTL < 0 {
		add("webhook.cache_ttl", "must be at least 0 (0 turns the cache off), got %s", w.CacheTTL)
	}
	for i, h := range w.Headers {
		if strings.TrimSpace(h) == "" || strings.ContainsAny(h, " :\t") {
			add("webhook.headers["+strconv.Itoa(i)+"]", "must be a header name such as User-Agent")
		}
	}
	if w.Secret != "" && len(w.Secret) < MinJWTSecretBytes {
		add("webhook.secret", "must be at least %d bytes, got %d", MinJWTSecretBytes, len(w.Secret))
	}
	return nil
}

func pluginAuthProblems(p PluginAuth, add func(key, format string, args ...any)) Problems {
	if p.Name == "" {
		add("provider", "plugin needs plugin.name: an entry of plugins: that implements Authenticate")
	}
	if p.Timeout <= 0 || p.Timeout > time.Minute {
		add("plugin.timeout", "must be more than 0 and at most 1m, got %s", p.Timeout)
	}
	for i, h := range p.Headers {
		if strings.TrimSpace(h) == "" || strings.ContainsAny(h, " :\t") {
			add("plugin.headers["+strconv.Itoa(i)+"]", "must be a header name such as User-Agent")
		}
	}
	return nil
}

func wechatProblems(w WeChatAuth, add func(key, format string, args ...any)) Problems {
	if len(w.AppIDs) == 0 {
		add("provider", "wechat needs wechat.appids: the mini program AppIDs allowed to connect")
	}
	for i, id := range w.AppIDs {
		if strings.TrimSpace(id) == "" {
			add("wechat.appids["+strconv.Itoa(i)+"]", "must not be empty")
		}
	}
	if w.BindTTL < 0 {
		add("wechat.bind_ttl", "must be more than 0, got %s", w.BindTTL)
	}
	return nil
}
