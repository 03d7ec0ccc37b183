package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pairrelay/relay/config"
)

// MaxKeyBytes bounds the pairing key a claim may carry, as for a raw token.
const MaxKeyBytes = 256

func init() { Register(config.AuthJWT, newJWT) }

// jwtProvider verifies a JWT and takes the pairing key from one claim.
type jwtProvider struct {
	cfg    config.JWTAuth
	parser *jwt.Parser
	secret []byte           // HS*; nil when no HS algorithm is allowed
	static crypto.PublicKey // public_key(_file); nil when none
	jwks   *jwks            // nil without jwks_url
}

func newJWT(a config.Auth, at string, opts Options) (Provider, error) {
	c := a.JWT
	p := &jwtProvider{cfg: c}
	hasHS := false
	for _, alg := range c.Algorithms {
		hasHS = hasHS || strings.HasPrefix(alg, "HS")
	}
	switch {
	case c.Secret != "":
		p.secret = []byte(c.Secret)
	case c.SecretFile != "":
		b, err := os.ReadFile(resolve(opts.Dir, c.SecretFile))
		if err != nil {
			return nil, fmt.Errorf("%s.jwt.secret_file: %w", at, err)
		}
		if p.secret = []byte(trimNewline(string(b))); len(p.secret) < config.MinJWTSecretBytes {
			return nil, fmt.Errorf("%s.jwt.secret_file: the secret must be at least %d bytes, got %d", at, config.MinJWTSecretBytes, len(p.secret))
		}
	}
	if !hasHS {
		p.secret = nil
	}
	pemText, where := c.PublicKey, "public_key"
	if c.PublicKeyFile != "" {
		b, err := os.ReadFile(resolve(opts.Dir, c.PublicKeyFile))
		if err != nil {
			return nil, fmt.Errorf("%s.jwt.public_key_file: %w", at, err)
		}
		pemText, where = string(b), "public_key_file"
	}
	if pemText != "" {
		key, err := parsePublicKey([]byte(pemText))
		if err != nil {
			return nil, fmt.Errorf("%s.jwt.%s: %w", at, where, err)
		}
		if !anyAlgFits(c.Algorithms, key) {
			return nil, fmt.Errorf("%s.jwt.%s: the key is %s, but algorithms lists no algorithm that verifies with it", at, where, keyKind(key))
		}
		p.static = key
	}
	if c.JWKSURL != "" {
		p.jwks = newJWKS(c.JWKSURL, c.JWKSRefresh, c.JWKSMinRefetch, opts)
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(c.Algorithms),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(c.Leeway),
	}
	if c.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(c.Issuer))
	}
	if c.Audience != "" {
		popts = append(popts, jwt.WithAudience(c.Audience))
	}
	p.parser = jwt.NewParser(popts...)
	return p, nil
}

func resolve(dir, name string) string {
	if filepath.IsAbs(name) || dir == "" {
		return name
	}
	return filepath.Join(dir, name)
}

func (p *jwtProvider) Authenticated() bool { return true }

func (p *jwtProvider) Close() {
	if p.jwks != nil {
		p.jwks.close()
	}
}

func (p *jwtProvider) Problems() ([]string, bool) {
	if p.jwks == nil {
		return nil, false
	}
	return p.jwks.problems()
}

func (p *jwtProvider) Authenticate(ctx context.Context, req *Request) (*Identity, error) {
	if req.Credential == "" {
		return nil, refuse("a JWT is required: in the token query parameter, a relay.auth.<base64url> subprotocol or an Authorization: Bearer header")
	}
	claims := jwt.MapClaims{}
	_, err := p.parser.ParseWithClaims(req.Credential, claims, func(t *jwt.Token) (any, error) { return p.keyFor(ctx, t) })
	if err != nil {
		return nil, jwtRefusal(err)
	}
	key, ok := claims[p.cfg.KeyClaim].(string)
	switch {
	case !ok || key == "":
		return nil, refuse("the token has no %s claim (a non-empty string) to pair by", p.cfg.KeyClaim)
	case len(key) > MaxKeyBytes:
		return nil, refuse("the token's %s claim is longer than %d bytes", p.cfg.KeyClaim, MaxKeyBytes)
	}
	id := &Identity{Key: key}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		// The leeway that admitted the token holds for the session too.
		id.Expires = exp.Time.Add(p.cfg.Leeway)
	}
	if p.cfg.EnvsClaim != "" {
		envs, ok := stringList(claims[p.cfg.EnvsClaim])
		if !ok {
			return nil, refuse("the token's %s claim (the envs it may use) is missing or not a list of strings", p.cfg.EnvsClaim)
		}
		id.Envs = envs
	}
	for _, name := range p.cfg.Claims {
		if v, ok := claims[name]; ok {
			if id.Claims == nil {
				id.Claims = make(map[string]any, len(p.cfg.Claims))
			}
			id.Claims[name] = v
		}
	}
	return id, nil
}

// keyFor gives the key that verifies t. The parser has already refused any
// alg outside the allow-list. Each alg family gets only its own kind of key:
// an HS token is checked against the configured secret and nothing else, so
// a token "signed" with a public key as HMAC secret cannot pass.
func (p *jwtProvider) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if strings.HasPrefix(alg, "HS") {
		if p.secret == nil {
			return nil, refuse("no secret for %s", alg)
		}
		return p.secret, nil
	}
	kid, _ := t.Header["kid"].(string)
	if p.jwks != nil && (kid != "" || p.static == nil) {
		return p.jwks.keyFor(ctx, kid, alg)
	}
	if p.static != nil && algFits(alg, p.static) {
		return p.static, nil
	}
	return nil, refuse("no key verifies %s tokens", alg)
}

// algFits reports whether key is the kind of key alg verifies with.
func algFits(alg string, key crypto.PublicKey) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return alg == "ES256" && k.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

func anyAlgFits(algs []string, key crypto.PublicKey) bool {
	for _, alg := range algs {
		if algFits(alg, key) {
			return true
		}
	}
	return false
}

func keyKind(key crypto.PublicKey) string {
	switch key.(type) {
	case *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PublicKey:
		return "EC"
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", key)
}

// parsePublicKey reads one PEM public key: PKIX (RSA, EC, Ed25519) or PKCS#1 RSA.
func parsePublicKey(text []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(text)
	if block == nil {
		return nil, errors.New("not a PEM block (-----BEGIN PUBLIC KEY-----)")
	}
	switch block.Type {
	case "PUBLIC KEY":
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid public key: %w", err)
		}
		switch key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			return key, nil
		}
		return nil, fmt.Errorf("a %T key is not supported (RSA, EC P-256 or Ed25519)", key)
	case "RSA PUBLIC KEY":
		key, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid RSA public key: %w", err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("a PEM %q block; want PUBLIC KEY (a private key must never be given to relay)", block.Type)
}

// jwtRefusal turns a parser error into a refusal the client may read; the
// parser's own text can quote parts of the token, so it stays out.
func jwtRefusal(err error) *Error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, jwt.ErrTokenExpired):
		return &Error{Code: "token_expired", Message: "the token has expired"}
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return refuse("the token has no exp claim; relay requires one")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return refuse("the token is not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return refuse("the token is issued in the future (iat)")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return refuse("the token is not for this audience (aud)")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return refuse("the token is from another issuer (iss)")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return refuse("the token is not a well-formed JWT")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return refuse("the token's signature or algorithm is not accepted")
	}
	return refuse("the token is not valid")
}

// stringList reads a claim that is a string or a list of strings.
func stringList(v any) ([]string, bool) {
	switch x := v.(type) {
	case string:
		return []string{x}, true
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}
