package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pairrelay/relay/config"
)

func pemOf(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func build(t *testing.T, a config.Auth) Provider {
	t.Helper()
	cfg := config.Default()
	cfg.Auth = a
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	set, err := Build(cfg, Options{Offline: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	return set.For("h5")
}

func signed(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every public-key algorithm verifies with a static PEM key of its kind and
// refuses the same token when the key is of another kind or another pair.
func TestJWTPublicKeyAlgorithms(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		alg    string
		method jwt.SigningMethod
		sign   any
		pub    any
		wrong  any
	}{
		{"RS256", jwt.SigningMethodRS256, rsaKey, &rsaKey.PublicKey, &otherRSA.PublicKey},
		{"PS256", jwt.SigningMethodPS256, rsaKey, &rsaKey.PublicKey, &ecKey.PublicKey},
		{"ES256", jwt.SigningMethodES256, ecKey, &ecKey.PublicKey, edPub},
		{"EdDSA", jwt.SigningMethodEdDSA, edKey, edPub, &rsaKey.PublicKey},
	}
	for _, tc := range cases {
		t.Run(tc.alg, func(t *testing.T) {
			p := build(t, config.Auth{Provider: config.AuthJWT, JWT: config.JWTAuth{Algorithms: []string{tc.alg}, PublicKey: pemOf(t, tc.pub)}})
			tok := signed(t, tc.method, tc.sign, jwt.MapClaims{"sub": "alice"})
			id, err := p.Authenticate(context.Background(), &Request{Credential: tok, Env: "h5"})
			if err != nil || id.Key != "alice" {
				t.Fatalf("Authenticate = %+v, %v", id, err)
			}
			algs := []string{tc.alg}
			if tc.alg == "RS256" {
				algs = append(algs, "PS256") // an RSA key of another pair
			} else {
				algs = append(algs, "RS256", "ES256", "EdDSA")
			}
			cfg := config.Default()
			cfg.Auth = config.Auth{Provider: config.AuthJWT, JWT: config.JWTAuth{Algorithms: algs, PublicKey: pemOf(t, tc.wrong)}}
			set, err := Build(cfg, Options{Offline: true})
			if err != nil {
				t.Fatal(err)
			}
			defer set.Close()
			if _, err := set.For("h5").Authenticate(context.Background(), &Request{Credential: tok}); err == nil {
				t.Fatal("a token verified with the wrong key")
			}
		})
	}
}

func TestJWTClaims(t *testing.T) {
	secret := strings.Repeat("s", 32)
	p := build(t, config.Auth{Provider: config.AuthJWT, JWT: config.JWTAuth{
		Algorithms: []string{"HS384"}, Secret: secret, KeyClaim: "pair", EnvsClaim: "envs", Claims: []string{"role", "absent"}, Leeway: time.Minute}})
	cases := []struct {
		name   string
		claims jwt.MapClaims
		key    string
		envs   []string
		refuse string
	}{
		{"list of envs", jwt.MapClaims{"pair": "p1", "envs": []string{"h5", "pc"}, "role": "x"}, "p1", []string{"h5", "pc"}, ""},
		{"one env as a string", jwt.MapClaims{"pair": "p1", "envs": "h5"}, "p1", []string{"h5"}, ""},
		{"within leeway", jwt.MapClaims{"pair": "p1", "envs": "h5", "exp": time.Now().Add(-30 * time.Second).Unix()}, "p1", []string{"h5"}, ""},
		{"no envs claim", jwt.MapClaims{"pair": "p1"}, "", nil, "envs"},
		{"envs not strings", jwt.MapClaims{"pair": "p1", "envs": []int{1}}, "", nil, "envs"},
		{"key claim a number", jwt.MapClaims{"pair": 7, "envs": "h5"}, "", nil, "pair"},
		{"key claim too long", jwt.MapClaims{"pair": strings.Repeat("k", 257), "envs": "h5"}, "", nil, "longer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := signed(t, jwt.SigningMethodHS384, []byte(secret), tc.claims)
			id, err := p.Authenticate(context.Background(), &Request{Credential: tok})
			if tc.refuse != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refuse) || strings.Contains(err.Error(), tok) {
					t.Fatalf("err = %v, want a refusal naming %q (and never the token)", err, tc.refuse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Key != tc.key || !slices.Equal(id.Envs, tc.envs) || id.Expires.IsZero() {
				t.Fatalf("identity %+v", id)
			}
			if _, ok := id.Claims["absent"]; ok {
				t.Fatal("a claim the token lacks appears")
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})
	if err := os.WriteFile(filepath.Join(dir, "private.pem"), privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "short"), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(strings.Repeat("z", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cases := map[string]struct {
		jwt  config.JWTAuth
		want string
	}{
		"private key":       {config.JWTAuth{Algorithms: []string{"RS256"}, PublicKeyFile: "private.pem"}, "auth.jwt.public_key_file: a PEM \"RSA PRIVATE KEY\" block"},
		"missing file":      {config.JWTAuth{Algorithms: []string{"RS256"}, PublicKeyFile: "nope.pem"}, "auth.jwt.public_key_file: open"},
		"short secret":      {config.JWTAuth{Algorithms: []string{"HS256"}, SecretFile: "short"}, "auth.jwt.secret_file: the secret must be at least 32 bytes, got 5"},
		"key of no alg":     {config.JWTAuth{Algorithms: []string{"RS256"}, PublicKey: pemOf(t, &ecKey.PublicKey)}, "the key is EC, but algorithms lists no algorithm"},
		"not PEM":           {config.JWTAuth{Algorithms: []string{"EdDSA"}, PublicKey: "hello"}, "not a PEM block"},
		"secret file is ok": {config.JWTAuth{Algorithms: []string{"HS256"}, SecretFile: "secret"}, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Auth = config.Auth{Provider: config.AuthJWT, JWT: tc.jwt}
			cfg.Auth.JWT.KeyClaim = "sub"
			set, err := Build(cfg, Options{Dir: dir, Offline: true})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				set.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCredential(t *testing.T) {
	enc := func(s string) string { return SubprotocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name                string
		query, proto, authz string
		cred, from, code    string
	}{
		{"none", "", "", "", "", "", ""},
		{"query", "abc", "", "", "abc", FromQuery, ""},
		{"subprotocol", "", "relay.v1, " + enc("a.b.c"), "", "a.b.c", FromSubprotocol, ""},
		{"subprotocol first", "", enc("x") + ",relay.v1", "", "x", FromSubprotocol, ""},
		{"bearer", "", "relay.v1", "Bearer  a.b.c ", "a.b.c", FromHeader, ""},
		{"bearer any case", "", "", "bearer t", "t", FromHeader, ""},
		{"basic", "", "", "Basic dXNlcjpwYXNz", "", "", "bad_credential"},
		{"two ways, one credential", "abc", "", "Bearer abc", "abc", FromHeader, ""},
		{"two ways, two credentials", "abc", "", "Bearer abd", "", "", "bad_credential"},
		{"two subprotocols", "", enc("a") + ", " + enc("b"), "", "", "", "bad_credential"},
		{"padding", "", SubprotocolPrefix + "YQ==", "", "", "", "bad_credential"},
		{"empty subprotocol", "", SubprotocolPrefix, "", "", "", "bad_credential"},
		{"too long", strings.Repeat("a", MaxCredentialBytes+1), "", "", "", "", "bad_credential"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cred, from, err := Credential(tc.query, tc.proto, tc.authz)
			code := ""
			if err != nil {
				code = err.Code
			}
			if cred != tc.cred || from != tc.from || code != tc.code {
				t.Fatalf("Credential = %q, %q, %v; want %q, %q, %s", cred, from, err, tc.cred, tc.from, tc.code)
			}
		})
	}
}

func TestParseJWKSSkipsWhatItCannotUse(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	b64 := base64.RawURLEncoding.EncodeToString
	body := `{"keys":[
		{"kty":"oct","kid":"sym","k":"c2VjcmV0"},
		{"kty":"RSA","kid":"small","n":"` + b64(small.N.Bytes()) + `","e":"AQAB"},
		{"kty":"EC","kid":"p384","crv":"P-384","x":"AA","y":"AA"},
		{"kty":"OKP","kid":"enc","use":"enc","crv":"Ed25519","x":"` + b64(make([]byte, 32)) + `"}
	]}`
	if _, err := parseJWKS([]byte(body)); err == nil || !strings.Contains(err.Error(), "no usable key") {
		t.Fatalf("err = %v, want no usable key", err)
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	keys, err := parseJWKS([]byte(`{"keys":[{"kty":"oct","k":"eA"},{"kty":"OKP","crv":"Ed25519","kid":"e1","x":"` + b64(edPub) + `"}]}`))
	if err != nil || len(keys) != 1 || keys[0].kid != "e1" {
		t.Fatalf("keys %v, err %v", keys, err)
	}
}

// BenchmarkAuthenticate is the cost of one jwt check per algorithm, key at hand.
func BenchmarkAuthenticate(b *testing.B) {
	t := &testing.T{}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	secret := strings.Repeat("s", 32)
	for _, tc := range []struct {
		alg    string
		method jwt.SigningMethod
		sign   any
		jwt    config.JWTAuth
	}{
		{"HS256", jwt.SigningMethodHS256, []byte(secret), config.JWTAuth{Secret: secret}},
		{"RS256", jwt.SigningMethodRS256, rsaKey, config.JWTAuth{PublicKey: pemOf(t, &rsaKey.PublicKey)}},
		{"ES256", jwt.SigningMethodES256, ecKey, config.JWTAuth{PublicKey: pemOf(t, &ecKey.PublicKey)}},
		{"EdDSA", jwt.SigningMethodEdDSA, edKey, config.JWTAuth{PublicKey: pemOf(t, edPub)}},
	} {
		b.Run(tc.alg, func(b *testing.B) {
			cfg := config.Default()
			cfg.Auth = config.Auth{Provider: config.AuthJWT, JWT: tc.jwt}
			cfg.Auth.JWT.Algorithms, cfg.Auth.JWT.KeyClaim = []string{tc.alg}, "sub"
			set, err := Build(cfg, Options{Offline: true})
			if err != nil {
				b.Fatal(err)
			}
			defer set.Close()
			tok := signed(t, tc.method, tc.sign, jwt.MapClaims{"sub": "alice"})
			req := &Request{Credential: tok}
			p := set.For("h5")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Authenticate(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestSign(t *testing.T) {
	// Worked by hand: HMAC-SHA256("key", "1764100000.{}").
	got := Sign([]byte("key"), time.Unix(1764100000, 0), []byte("{}"))
	mac := hmacHex("key", "1764100000.{}")
	if got != "t=1764100000,v1="+mac {
		t.Fatalf("Sign = %s", got)
	}
}

func hmacHex(key, msg string) string {
	h := hmac.New(sha256.New, []byte(key))
	h.Write([]byte(msg))
	return hex.EncodeToString(h.Sum(nil))
}
