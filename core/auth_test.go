package core

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pairrelay/relay/auth"
	"github.com/pairrelay/relay/config"
)

const testSecret = "0123456789abcdef0123456789abcdef-test-secret"

// logSink collects every log line of a relay so that a test can check that
// no credential was ever written.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// authRelay is a relay with auth providers built from its config, as
// relay serve builds them.
type authRelay struct {
	*testRelay
	log     *logSink
	secrets []string // credentials the test used: none may appear in the log
}

func startAuthRelay(t testing.TB, mutate ...func(*config.Config)) *authRelay {
	t.Helper()
	cfg := config.Default()
	cfg.Wire = config.WireV1
	for _, m := range mutate {
		m(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sink := &logSink{}
	level := slog.LevelDebug // every line a session writes is checked for credentials
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelInfo // a line per connection would be measured too
	}
	log := slog.New(slog.NewJSONHandler(sink, &slog.HandlerOptions{Level: level}))
	set, err := auth.Build(cfg, auth.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bp := NewMemoryBackplane(cfg.History)
	srv := NewServer(cfg, log, bp)
	srv.SetAuth(set)
	go func() { _ = srv.Serve(ln) }()
	r := &authRelay{testRelay: &testRelay{srv: srv, url: "ws://" + ln.Addr().String() + cfg.Path, http: "http://" + ln.Addr().String()}, log: sink}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = bp.Close()
		set.Close()
		for _, s := range r.secrets {
			if strings.Contains(sink.String(), s) {
				t.Errorf("a credential appears in the log:\n%s", sink.String())
			}
		}
	})
	return r
}

// hsAuth configures HS256 JWTs for every env.
func hsAuth(c *config.Config) {
	c.Auth = config.Auth{Provider: config.AuthJWT, JWT: config.JWTAuth{
		Algorithms: []string{"HS256"}, Secret: testSecret, Issuer: "https://backend.test", Audience: "relay",
		KeyClaim: "sub", EnvsClaim: "", Claims: []string{"role"},
	}}
}

// signHS signs claims with HS256 and the test secret; exp defaults to 1h ahead.
func signHS(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	return sign(t, jwt.SigningMethodHS256, []byte(testSecret), claims)
}

func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"iss": "https://backend.test", "aud": "relay", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// refusal dials and expects an HTTP refusal before the upgrade; it returns
// the status and the JSON body's error code.
func (r *authRelay) refusal(t *testing.T, query string, header http.Header) (int, string) {
	t.Helper()
	r.testRelay.t = t
	c, err := r.tryDial(query, header)
	if err == nil {
		c.conn.Close()
		t.Fatalf("dial %s: admitted, want a refusal", redact(query))
	}
	if c.resp == nil {
		t.Fatalf("dial %s: %v, want an HTTP refusal", redact(query), err)
	}
	body, _ := io.ReadAll(c.resp.Body)
	var e struct{ Error, Message string }
	if jerr := json.Unmarshal(body, &e); jerr != nil {
		t.Fatalf("refusal body %q is not JSON: %v", body, jerr)
	}
	for _, s := range r.secrets {
		if strings.Contains(string(body), s) {
			t.Fatalf("the refusal body holds the credential: %s", body)
		}
	}
	return c.resp.StatusCode, e.Error
}

func redact(query string) string {
	if i := strings.Index(query, "token="); i >= 0 {
		return query[:i] + "token=…"
	}
	return query
}

// admit dials a v1 client and consumes its relay.hello.
func (r *authRelay) admit(t *testing.T, query string, header http.Header) (*client, map[string]any) {
	t.Helper()
	r.testRelay.t = t
	c, err := r.tryDial(query, header)
	if err != nil {
		var body []byte
		if c.resp != nil {
			body, _ = io.ReadAll(c.resp.Body)
		}
		t.Fatalf("dial %s: %v %s", redact(query), err, body)
	}
	hello := c.readJSON()
	if hello["type"] != "relay.hello" {
		t.Fatalf("first frame %v, want relay.hello", hello)
	}
	return c, hello["data"].(map[string]any)
}

func tokenQuery(token, env string) string {
	return "token=" + url.QueryEscape(token) + "&env=" + env
}

func TestJWTMatrix(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	// Both an HS and an RS algorithm are allowed, the setting in which key
	// confusion would bite: an HS256 token "signed" with the RSA public key
	// as its secret must still fail.
	r := startAuthRelay(t, hsAuth, func(c *config.Config) {
		c.Auth.JWT.Algorithms = []string{"HS256", "RS256"}
		c.Auth.JWT.PublicKey = string(pubPEM)
		c.Auth.JWT.Leeway = 0
	})
	unsigned, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "aud": "relay",
		"iss": "https://backend.test", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).Unix()
	cases := []struct {
		name  string
		token string
		code  string // "" admits
	}{
		{"valid HS256", signHS(t, jwt.MapClaims{"sub": "alice"}), ""},
		{"valid RS256", sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "alice"}), ""},
		{"expired", signHS(t, jwt.MapClaims{"sub": "alice", "exp": past}), "token_expired"},
		{"no exp", signHS(t, jwt.MapClaims{"sub": "alice", "exp": nil}), "unauthorized"},
		{"nbf in the future", signHS(t, jwt.MapClaims{"sub": "alice", "nbf": time.Now().Add(time.Hour).Unix()}), "unauthorized"},
		{"wrong aud", signHS(t, jwt.MapClaims{"sub": "alice", "aud": "other"}), "unauthorized"},
		{"wrong iss", signHS(t, jwt.MapClaims{"sub": "alice", "iss": "https://evil.test"}), "unauthorized"},
		{"alg none", unsigned, "unauthorized"},
		{"HS256 signed with the RSA public key", sign(t, jwt.SigningMethodHS256, pubPEM, jwt.MapClaims{"sub": "alice"}), "unauthorized"},
		{"HS256 signed with another secret", sign(t, jwt.SigningMethodHS256, []byte(strings.Repeat("x", 40)), jwt.MapClaims{"sub": "alice"}), "unauthorized"},
		{"HS512 not in the allow-list", sign(t, jwt.SigningMethodHS512, []byte(testSecret), jwt.MapClaims{"sub": "alice"}), "unauthorized"},
		{"no sub", signHS(t, jwt.MapClaims{"role": "admin"}), "unauthorized"},
		{"not a JWT", "alice", "unauthorized"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r.secrets = append(r.secrets, tc.token)
			q := tokenQuery(tc.token, "h5")
			if tc.code == "" {
				c, _ := r.admit(t, q, nil)
				c.conn.Close()
				return
			}
			status, code := r.refusal(t, q, nil)
			if status != http.StatusUnauthorized || code != tc.code {
				t.Fatalf("refused with %d %s, want 401 %s", status, code, tc.code)
			}
		})
	}
}

func TestAuthTransports(t *testing.T) {
	r := startAuthRelay(t, hsAuth)
	tok := signHS(t, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, tok)
	sub := auth.SubprotocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(tok))

	t.Run("token query", func(t *testing.T) {
		c, _ := r.admit(t, tokenQuery(tok, "h5"), nil)
		c.conn.Close()
	})
	t.Run("subprotocol beside relay.v1", func(t *testing.T) {
		c, _ := r.admit(t, "env=h5", http.Header{"Sec-WebSocket-Protocol": {"relay.v1, " + sub}})
		defer c.conn.Close()
		// The server must pick relay.v1 and never echo the credential.
		if got := c.resp.Header.Get("Sec-WebSocket-Protocol"); got != "relay.v1" {
			t.Fatalf("selected subprotocol %q, want relay.v1", got)
		}
		if c.conn.Subprotocol() != "relay.v1" {
			t.Fatalf("connection subprotocol %q", c.conn.Subprotocol())
		}
	})
	t.Run("Authorization header", func(t *testing.T) {
		c, _ := r.admit(t, "env=h5&v=1", http.Header{"Authorization": {"Bearer " + tok}})
		c.conn.Close()
	})
	// No credential at all: TestFirstFrameAuth (a v1 connection may still
	// send it; a seed one is refused with 401).
	t.Run("the same credential twice", func(t *testing.T) {
		c, _ := r.admit(t, tokenQuery(tok, "h5"), http.Header{"Authorization": {"Bearer " + tok}})
		c.conn.Close()
	})
	t.Run("two different credentials", func(t *testing.T) {
		other := signHS(t, jwt.MapClaims{"sub": "bob"})
		r.secrets = append(r.secrets, other)
		status, code := r.refusal(t, tokenQuery(tok, "h5"), http.Header{"Authorization": {"Bearer " + other}})
		if status != http.StatusBadRequest || code != "bad_credential" {
			t.Fatalf("refused with %d %s, want 400 bad_credential", status, code)
		}
	})
	t.Run("subprotocol that is not base64url", func(t *testing.T) {
		status, code := r.refusal(t, "env=h5", http.Header{"Sec-WebSocket-Protocol": {"relay.v1, relay.auth.a+b/c"}})
		if status != http.StatusBadRequest || code != "bad_credential" {
			t.Fatalf("refused with %d %s, want 400 bad_credential", status, code)
		}
	})
	t.Run("expired in the subprotocol", func(t *testing.T) {
		old := signHS(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()})
		r.secrets = append(r.secrets, old)
		h := http.Header{"Sec-WebSocket-Protocol": {"relay.v1, " + auth.SubprotocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(old))}}
		if status, code := r.refusal(t, "env=h5", h); status != http.StatusUnauthorized || code != "token_expired" {
			t.Fatalf("refused with %d %s, want 401 token_expired", status, code)
		}
	})
}

// claimsStep shows a handler what auth let it see: it replaces the data with
// the message's claims.
type claimsStep struct{}

func (*claimsStep) Handle(_ context.Context, m *Message) ([]*Message, error) {
	b, err := json.Marshal(m.Claims)
	if err != nil {
		return nil, err
	}
	m.Data = b
	return []*Message{m}, nil
}

func init() {
	RegisterHandler(HandlerSpec{Name: "test-claims", Summary: "test only", New: func() Handler { return &claimsStep{} }})
}

// Two different JWTs (an H5 page's and a mini program's) pair by their sub,
// and handlers see the chosen claims but not the others.
func TestJWTPairsBySubAndShowsClaims(t *testing.T) {
	r := startAuthRelay(t, hsAuth)
	r.srv.hub.SetPipeline(pipelineFrom(t, "routes: [{match: {type: who}, handlers: [{handler: test-claims}]}]"))
	h5Tok := signHS(t, jwt.MapClaims{"sub": "alice", "role": "editor", "secret_note": "x", "jti": "h5-1"})
	mpTok := signHS(t, jwt.MapClaims{"sub": "alice", "role": "viewer", "jti": "mp-9"})
	r.secrets = append(r.secrets, h5Tok, mpTok)
	h5, _ := r.admit(t, tokenQuery(h5Tok, "h5"), nil)
	mp, hello := r.admit(t, "env=miniapp", http.Header{"Authorization": {"Bearer " + mpTok}})
	if peers := hello["peers"].([]any); len(peers) != 1 || peers[0] != "h5" {
		t.Fatalf("miniapp's peers %v, want [h5]: the two JWTs did not pair", peers)
	}
	h5.readType("relay.presence")
	h5.send(`{"type":"who","data":{}}`)
	got := mp.readType("who")
	if data, _ := json.Marshal(got["data"]); string(data) != `{"role":"editor"}` {
		t.Fatalf("handler saw claims %s, want only role of the sender", data)
	}
	// Another sub is another room.
	bobTok := signHS(t, jwt.MapClaims{"sub": "bob"})
	r.secrets = append(r.secrets, bobTok)
	_, hello = r.admit(t, tokenQuery(bobTok, "miniapp"), nil)
	if peers := hello["peers"].([]any); len(peers) != 0 {
		t.Fatalf("bob sees peers %v", peers)
	}
}

// The attacks of issue 11, replayed: a client that knows the pairing key
// (sub) but holds no valid JWT for it gets nothing.
func TestAuthAttacksRefused(t *testing.T) {
	r := startAuthRelay(t, hsAuth, func(c *config.Config) {
		c.Auth.JWT.EnvsClaim = "envs"
		c.Envs = map[string]config.Env{"h5": {}, "miniapp": {}}
	})
	h5Tok := signHS(t, jwt.MapClaims{"sub": "alice", "envs": []string{"h5"}})
	mpTok := signHS(t, jwt.MapClaims{"sub": "alice", "envs": []string{"miniapp"}})
	r.secrets = append(r.secrets, h5Tok, mpTok)
	h5, _ := r.admit(t, tokenQuery(h5Tok, "h5"), nil)
	mp, _ := r.admit(t, tokenQuery(mpTok, "miniapp"), nil)
	h5.readType("relay.presence")
	h5.send(`{"type":"secret","data":{"n":1}}`)
	mp.readType("secret")

	for _, q := range []string{
		"token=alice&env=h5&since=0",      // read history with the raw key
		"token=alice&env=pc",              // join as a new env
		"token=alice&env=miniapp",         // replace the mini program
		"token=auth:alice&env=h5&since=0", // name the authenticated room itself
	} {
		if status, code := r.refusal(t, q, nil); status != http.StatusUnauthorized {
			t.Errorf("%s: refused with %d %s, want 401", q, status, code)
		}
	}
	// A valid JWT of alice that allows only h5 cannot replace (or spoof) the
	// mini program.
	if status, code := r.refusal(t, tokenQuery(h5Tok, "miniapp")+"&since=0", nil); status != http.StatusForbidden || code != "env_not_allowed" {
		t.Errorf("h5's JWT as miniapp: refused with %d %s, want 403 env_not_allowed", status, code)
	}
	// Another user's valid JWT lands in another room: no history of alice.
	eveTok := signHS(t, jwt.MapClaims{"sub": "eve", "envs": []string{"miniapp"}})
	r.secrets = append(r.secrets, eveTok)
	eve, hello := r.admit(t, tokenQuery(eveTok, "miniapp")+"&since=0", nil)
	if peers := hello["peers"].([]any); len(peers) != 0 {
		t.Fatalf("eve sees alice's peers %v", peers)
	}
	// The real pair is untouched: still connected, still talking.
	mp.send(`{"type":"still","data":{}}`)
	if m := h5.readType("still"); m["from"] != "miniapp" {
		t.Fatalf("from %v", m["from"])
	}
	eve.expectSilence(200 * time.Millisecond)
}

// With one env on provider none and another on jwt, a raw token can never
// reach the authenticated room, even by spelling its internal name.
func TestAuthMixedEnvsKeepRoomsApart(t *testing.T) {
	r := startAuthRelay(t, func(c *config.Config) {
		hsAuth(c)
		c.Envs = map[string]config.Env{"h5": {}, "kiosk": {Auth: config.Auth{Provider: config.AuthNone}}}
	})
	tok := signHS(t, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, tok)
	h5, _ := r.admit(t, tokenQuery(tok, "h5"), nil)
	h5.send(`{"type":"private","data":{}}`)
	if status, code := r.refusal(t, "token=auth:alice&env=kiosk&since=0", nil); status != http.StatusBadRequest || code != "bad_token" {
		t.Fatalf("reserved prefix: %d %s, want 400 bad_token", status, code)
	}
	kiosk, hello := r.admit(t, "token=alice&env=kiosk&since=0", nil)
	if peers := hello["peers"].([]any); len(peers) != 0 {
		t.Fatalf("the unauthenticated kiosk sees %v of alice's authenticated room", peers)
	}
	kiosk.expectSilence(200 * time.Millisecond) // no replayed history either
}

func TestAuthConfiguredButNotGivenFailsClosed(t *testing.T) {
	cfg := config.Default()
	hsAuth(cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bp := NewMemoryBackplane(cfg.History)
	srv := NewServer(cfg, slog.New(slog.DiscardHandler), bp)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()); _ = bp.Close() })
	r := &authRelay{testRelay: &testRelay{t: t, srv: srv, url: "ws://" + ln.Addr().String() + cfg.Path}}
	if status, code := r.refusal(t, "token=alice&env=h5", nil); status != http.StatusServiceUnavailable || code != "auth_unavailable" {
		t.Fatalf("refused with %d %s, want 503 auth_unavailable", status, code)
	}
}

// keyServer serves a JWKS that the test rotates, counting fetches.
type keyServer struct {
	mu      sync.Mutex
	keys    []map[string]string
	fetches int
	srv     *http.Server
	url     string
}

func startKeyServer(t *testing.T) *keyServer { return startKeyServerB(t) }

func startKeyServerB(t testing.TB) *keyServer {
	t.Helper()
	ks := &keyServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ks.url = "http://" + ln.Addr().String() + "/.well-known/jwks.json"
	ks.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ks.mu.Lock()
		defer ks.mu.Unlock()
		ks.fetches++
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": ks.keys})
	})}
	go func() { _ = ks.srv.Serve(ln) }()
	t.Cleanup(func() { _ = ks.srv.Close() })
	return ks
}

func (ks *keyServer) serve(keys ...map[string]string) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.keys = keys
}

func (ks *keyServer) count() int {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return ks.fetches
}

func rsaJWK(kid string, k *rsa.PrivateKey) map[string]string {
	e := big.NewInt(int64(k.E)).Bytes()
	return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()), "e": base64.RawURLEncoding.EncodeToString(e)}
}

func ecJWK(kid string, k *ecdsa.PrivateKey) map[string]string {
	b, err := k.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256",
		"x": base64.RawURLEncoding.EncodeToString(b[1:33]), "y": base64.RawURLEncoding.EncodeToString(b[33:])}
}

func signKid(t testing.TB, method jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	c := jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		c[k] = v
	}
	tok := jwt.NewWithClaims(method, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwksAuth(url string, refresh, minRefetch time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		c.Auth = config.Auth{Provider: config.AuthJWT, JWT: config.JWTAuth{
			Algorithms: []string{"RS256", "ES256"}, JWKSURL: url, JWKSRefresh: refresh, JWKSMinRefetch: minRefetch, KeyClaim: "sub",
		}}
	}
}

func (r *authRelay) readyz(t *testing.T) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(r.http + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestJWKSRotationRefetchesOnceForAnUnknownKid(t *testing.T) {
	k1, _ := rsa.GenerateKey(rand.Reader, 2048)
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks := startKeyServer(t)
	ks.serve(rsaJWK("k1", k1))
	// Neither the timer nor retries fetch during the test: every fetch
	// after the first is one an unknown kid caused.
	r := startAuthRelay(t, jwksAuth(ks.url, time.Hour, time.Hour))
	if n := ks.count(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	tok1 := signKid(t, jwt.SigningMethodRS256, "k1", k1, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, tok1)
	c, _ := r.admit(t, tokenQuery(tok1, "h5"), nil)
	c.conn.Close()

	ks.serve(ecJWK("k2", k2)) // the issuer rotates: k1 retired, k2 new
	tok2 := signKid(t, jwt.SigningMethodES256, "k2", k2, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, tok2)
	c, _ = r.admit(t, tokenQuery(tok2, "miniapp"), nil)
	c.conn.Close()
	if n := ks.count(); n != 2 {
		t.Fatalf("%d fetches after a token with a new kid, want 2", n)
	}
	// Another unknown kid right after: refused without a fetch (rate limit).
	k3, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok3 := signKid(t, jwt.SigningMethodES256, "k3", k3, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, tok3)
	if status, _ := r.refusal(t, tokenQuery(tok3, "h5"), nil); status != http.StatusUnauthorized {
		t.Fatalf("unknown kid: %d, want 401", status)
	}
	// The retired key no longer verifies.
	if status, _ := r.refusal(t, tokenQuery(tok1, "h5"), nil); status != http.StatusUnauthorized {
		t.Fatalf("retired kid: %d, want 401", status)
	}
	if n := ks.count(); n != 2 {
		t.Fatalf("%d fetches, want still 2: unknown kids must not make relay hammer the key server", n)
	}
	// A token claiming RS256 with the EC key's kid is refused: a key serves
	// only algorithms of its kind.
	forged := signKid(t, jwt.SigningMethodRS256, "k2", k1, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, forged)
	if status, _ := r.refusal(t, tokenQuery(forged, "h5"), nil); status != http.StatusUnauthorized {
		t.Fatalf("alg of another kind for kid k2: %d, want 401", status)
	}
}

func TestJWKSDownKeepsCachedKeysAndIsReported(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ks := startKeyServer(t)
	ks.serve(ecJWK("k1", k1))
	r := startAuthRelay(t, jwksAuth(ks.url, time.Second, time.Second))
	if status, body := r.readyz(t); status != http.StatusOK || body["warnings"] != nil {
		t.Fatalf("/readyz %d %v before the key server went down", status, body)
	}
	_ = ks.srv.Close()
	eventually(t, "/readyz to report the failing JWKS", func() bool {
		status, body := r.readyz(t)
		return status == http.StatusOK && body["warnings"] != nil
	})
	_, body := r.readyz(t)
	if w := body["warnings"].([]any); !strings.Contains(w[0].(string), ks.url) {
		t.Fatalf("warning %v does not name the URL", w)
	}
	tok := signKid(t, jwt.SigningMethodES256, "k1", k1, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, tok)
	c, _ := r.admit(t, tokenQuery(tok, "h5"), nil)
	c.conn.Close()
	if !strings.Contains(r.log.String(), "JWKS fetch failed") {
		t.Fatalf("the failing fetch was not logged:\n%s", r.log.String())
	}
}

func TestJWKSUnreachableFromStartIsNotReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/jwks.json"
	ln.Close() // nothing listens there now
	r := startAuthRelay(t, jwksAuth(dead, time.Hour, time.Hour))
	status, body := r.readyz(t)
	if status != http.StatusServiceUnavailable || body["status"] != "auth keys unavailable" {
		t.Fatalf("/readyz %d %v, want 503 auth keys unavailable", status, body)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tok := signKid(t, jwt.SigningMethodES256, "k1", k, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, tok)
	if status, _ := r.refusal(t, tokenQuery(tok, "h5"), nil); status != http.StatusUnauthorized {
		t.Fatalf("no keys: %d, want 401", status)
	}
}

func TestFirstFrameAuth(t *testing.T) {
	r := startAuthRelay(t, hsAuth, func(c *config.Config) {
		c.Auth.JWT.EnvsClaim = "envs"
		c.Wire = config.WireSeed // plain connections are seed: v1 ones ask with v=1
	})
	r.srv.firstFrameTimeout.Store(int64(300 * time.Millisecond))
	tok := signHS(t, jwt.MapClaims{"sub": "alice", "envs": []string{"h5", "miniapp"}})
	r.secrets = append(r.secrets, tok)
	authFrame := `{"type":"relay.auth","data":{"token":"` + tok + `"}}`

	t.Run("admits and pairs", func(t *testing.T) {
		r.testRelay.t = t
		h5, _ := r.admit(t, tokenQuery(tok, "h5")+"&v=1", nil)
		mp := r.dial("v=1&env=miniapp") // no credential in the URL or a header
		mp.send(authFrame)
		if hello := mp.readJSON(); hello["type"] != "relay.hello" {
			t.Fatalf("after relay.auth: %v, want relay.hello", hello)
		}
		h5.readType("relay.presence")
		h5.send(`{"type":"hi"}`)
		mp.readType("hi")
	})
	for _, tc := range []struct {
		name, frame, env, code string
		close                  int
	}{
		{"another frame first", `{"type":"hi"}`, "h5", "unauthorized", CloseUnauthorized},
		{"not JSON", `relay.auth`, "h5", "unauthorized", CloseUnauthorized},
		{"expired", `{"type":"relay.auth","data":{"token":"` + signHS(t, jwt.MapClaims{"sub": "alice", "envs": "h5", "exp": time.Now().Add(-time.Hour).Unix()}) + `"}}`, "h5", "token_expired", CloseUnauthorized},
		{"env not allowed", authFrame, "pc", "env_not_allowed", CloseEnvNotAllowed},
		{"nothing in time", "", "h5", "unauthorized", CloseUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.testRelay.t = t
			c := r.dial("v=1&env=" + tc.env)
			if tc.frame != "" {
				c.send(tc.frame)
			}
			if e := c.readJSON(); e["type"] != "relay.error" || e["data"].(map[string]any)["code"] != tc.code {
				t.Fatalf("got %v, want relay.error %s", e, tc.code)
			}
			c.expectClose(tc.close)
		})
	}
	t.Run("seed clients must present it when connecting", func(t *testing.T) {
		if status, _ := r.refusal(t, "env=h5", nil); status != http.StatusUnauthorized {
			t.Fatalf("%d, want 401", status)
		}
	})
}

func TestExpiryWarnsThenClosesWith4501(t *testing.T) {
	r := startAuthRelay(t, hsAuth)
	long := signHS(t, jwt.MapClaims{"sub": "alice"})
	short := signHS(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(2 * time.Second).Unix()})
	r.secrets = append(r.secrets, long, short)
	h5, _ := r.admit(t, tokenQuery(long, "h5"), nil)
	mp, _ := r.admit(t, tokenQuery(short, "miniapp"), nil)
	h5.readType("relay.presence")
	warning := mp.readType("relay.error")
	if data := warning["data"].(map[string]any); data["code"] != "token_expired" {
		t.Fatalf("warning %v, want relay.error token_expired", warning)
	}
	mp.expectClose(CloseUnauthorized)
	if p := h5.readType("relay.presence")["data"].(map[string]any); p["online"] != false {
		t.Fatalf("presence %v, want miniapp offline", p)
	}
}

func TestRefreshKeepsTheSession(t *testing.T) {
	r := startAuthRelay(t, hsAuth)
	long := signHS(t, jwt.MapClaims{"sub": "alice"})
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
	short := signHS(t, jwt.MapClaims{"sub": "alice", "exp": exp.Unix()})
	fresh := signHS(t, jwt.MapClaims{"sub": "alice", "role": "renewed"})
	bobs := signHS(t, jwt.MapClaims{"sub": "bob"})
	stale := signHS(t, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Minute).Unix()})
	r.secrets = append(r.secrets, long, short, fresh, bobs, stale)
	h5, _ := r.admit(t, tokenQuery(long, "h5"), nil)
	mp, _ := r.admit(t, tokenQuery(short, "miniapp"), nil)
	h5.readType("relay.presence")
	mp.readType("relay.error") // the warning

	for _, tc := range []struct{ token, code string }{
		{bobs, "unauthorized"},   // another pairing key
		{stale, "token_expired"}, // no better than the one it replaces
		{"", "invalid_message"},
	} {
		mp.sendJSON(map[string]any{"type": "relay.refresh", "id": "bad", "data": map[string]any{"token": tc.token}})
		if e := mp.readType("relay.error")["data"].(map[string]any); e["code"] != tc.code {
			t.Fatalf("refresh refused with %v, want %s", e, tc.code)
		}
	}
	mp.sendJSON(map[string]any{"type": "relay.refresh", "id": "r1", "data": map[string]any{"token": fresh}})
	if ack := mp.readType("relay.ack")["data"].(map[string]any); ack["id"] != "r1" {
		t.Fatalf("ack %v", ack)
	}
	// Past the first credential's expiry the mini program is still
	// connected: a closed session would have sent close 4501 instead of
	// answering the ping, and the H5 page would hear of its departure.
	pc, _ := r.admit(t, tokenQuery(long, "pc"), nil)
	h5.readType("relay.presence")
	pc.expectSilence(time.Until(exp) + 500*time.Millisecond)
	mp.send(`{"type":"relay.ping"}`)
	mp.readType("relay.pong", "relay.presence")
	mp.send(`{"type":"still-here"}`)
	if m := h5.readJSON(); m["type"] != "still-here" {
		t.Fatalf("after the old expiry h5 got %v", m)
	}
}

func TestRefreshWithoutAuth(t *testing.T) {
	r := startAuthRelay(t)
	c, _ := r.admit(t, "v=1&token=t&env=h5", nil)
	c.send(`{"type":"relay.refresh","data":{"token":"x"}}`)
	if e := c.readType("relay.error")["data"].(map[string]any); e["code"] != "unauthorized" {
		t.Fatalf("%v", e)
	}
}

func TestMetricsToken(t *testing.T) {
	const token = "metrics-token-0123456789"
	get := func(url, bearer string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && !strings.Contains(string(body), "go_goroutines") {
			t.Fatalf("200 without metrics: %.200s", body)
		}
		return resp.StatusCode
	}
	r := startAuthRelay(t, func(c *config.Config) { c.Metrics.Token = token })
	for _, tc := range []struct {
		bearer string
		want   int
	}{{"", 401}, {"wrong-token-0123456789", 401}, {token, 200}} {
		if got := get(r.http+"/metrics", tc.bearer); got != tc.want {
			t.Errorf("bearer %q: %d, want %d", tc.bearer, got, tc.want)
		}
	}
	// With a listener of its own, /metrics leaves the client-facing address.
	sep := startAuthRelay(t, func(c *config.Config) { c.Metrics = config.MetricsEndpoint{Listen: "127.0.0.1:0", Token: token} })
	if got := get(sep.http+"/metrics", token); got != http.StatusNotFound {
		t.Errorf("/metrics beside the socket: %d, want 404", got)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ms := &http.Server{Handler: sep.srv.MetricsHandler()}
	go func() { _ = ms.Serve(ln) }()
	t.Cleanup(func() { _ = ms.Close() })
	if got := get("http://"+ln.Addr().String()+"/metrics", token); got != http.StatusOK {
		t.Errorf("/metrics on its own listener: %d, want 200", got)
	}
	if got := get("http://"+ln.Addr().String()+"/metrics", ""); got != http.StatusUnauthorized {
		t.Errorf("/metrics on its own listener without the token: %d, want 401", got)
	}
}
