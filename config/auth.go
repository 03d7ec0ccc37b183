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
	AuthNone = "none" // the token is the pairing key, unchecked (the original relay)
	AuthJWT  = "jwt"  // a signed JWT; the pairing key is one of its claims
)

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
	Provider string  `yaml:"provider" doc:"none (the token is the pairing key, unchecked: the original relay's behaviour) or jwt (a signed JWT; the pairing key is one of its claims). Empty: none at the top level; under envs.<env>.auth, the top-level auth."`
	JWT      JWTAuth `yaml:"jwt" doc:"With provider jwt: how tokens are verified and what they grant."`
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
	Claims         []string      `yaml:"claims" doc:"Claims handed to built-in handlers with each message the connection sends (Message.Claims; plugins do not receive them yet). Empty: none; the token itself never is."`
}

// authDefaults fills what an auth section left out; Default() holds the same
// values for the top level, and an env's own auth gets them here.
func (a *Auth) applyDefaults() {
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
	for _, name := range slices.Sorted(maps.Keys(c.Envs)) {
		ps = append(ps, authSectionProblems(join(join("envs", name), "auth"), c.Envs[name].Auth, true)...)
	}
	return ps
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
	// jwt settings beside another provider would be silently ignored.
	unusedJWT := !reflect.DeepEqual(a.JWT, defaultAuth().JWT)
	switch a.Provider {
	case "":
		if unusedJWT && perEnv {
			add("", "sets jwt settings but no provider: set provider: jwt (without a provider the env uses the top-level auth)")
		} else if unusedJWT {
			add("", "sets jwt settings but no provider: set provider: jwt")
		}
		return ps
	case AuthNone:
		if unusedJWT {
			add("provider", "is none, which ignores the jwt settings: set provider: jwt or remove them")
		}
		return ps
	case AuthJWT:
	default:
		add("provider", "must be none or jwt, got %q", a.Provider)
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
