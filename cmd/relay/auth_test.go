package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/pairrelay/relay/auth"
	"github.com/pairrelay/relay/config"
)

const exampleSecret = "example-secret-0123456789abcdef-0123456789"

// TestAuthJWTExample checks the shipped examples/auth-jwt.yaml: relay check
// accepts it, and a relay serving it pairs an H5 page (JWT in the token
// query) with a mini program (JWT in the subprotocol) of the same sub, while
// the bare sub gets 401 and no JWT reaches the log.
func TestAuthJWTExample(t *testing.T) {
	t.Setenv("RELAY_JWT_SECRET", exampleSecret)
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"check", "../../examples/auth-jwt.yaml"}, &out, io.Discard); err != nil {
		t.Fatalf("relay check examples/auth-jwt.yaml: %v", err)
	}
	src, err := os.ReadFile("../../examples/auth-jwt.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, writeConfig(t, string(src)+"\nlisten: \"127.0.0.1:0\"\n"))

	sign := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(exampleSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	h5Tok := sign(jwt.MapClaims{"sub": "user-42", "exp": exp, "client": "h5"})
	mpTok := sign(jwt.MapClaims{"sub": "user-42", "exp": exp, "client": "miniapp"})
	base := "ws://" + p.addr + "/socket"
	d := fws.Dialer{HandshakeTimeout: 5 * time.Second}

	h5, _, err := d.Dial(base+"?v=1&env=h5&token="+h5Tok, nil)
	if err != nil {
		t.Fatalf("h5 with the JWT in the token query: %v", err)
	}
	defer h5.Close()
	// h5 has joined once its hello arrives; only then does miniapp's hello
	// name it among the peers (else h5 comes as presence).
	_ = h5.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, b, err := h5.ReadMessage(); err != nil || !strings.Contains(string(b), `"type":"relay.hello"`) {
		t.Fatalf("h5's first frame: %s, %v", b, err)
	}
	mp, resp, err := d.Dial(base+"?env=miniapp", http.Header{"Sec-WebSocket-Protocol": {
		"relay.v1, " + auth.SubprotocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(mpTok))}})
	if err != nil {
		t.Fatalf("miniapp with the JWT in the subprotocol: %v", err)
	}
	defer mp.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "relay.v1" {
		t.Fatalf("selected subprotocol %q, want relay.v1", got)
	}
	read := func(c *fws.Conn, want string) {
		t.Helper()
		for {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("waiting for %s: %v", want, err)
			}
			if strings.Contains(string(b), want) {
				return
			}
		}
	}
	read(mp, `"peers":["h5"]`)
	if err := h5.WriteMessage(fws.TextMessage, []byte(`{"type":"addMaterial","data":{"n":1}}`)); err != nil {
		t.Fatal(err)
	}
	read(mp, `"type":"addMaterial"`)

	_, resp, err = d.Dial(base+"?env=h5&since=0&token=user-42", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the bare sub as token: err %v, response %v; want 401", err, resp)
	}
	for _, tok := range []string{h5Tok, mpTok} {
		if strings.Contains(p.logText(), tok) {
			t.Fatalf("a JWT appears in the log:\n%s", p.logText())
		}
	}
}

func TestServeWarnsOnOpenListenerWithoutAuth(t *testing.T) {
	none, err := auth.Build(config.Default(), auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	withJWT := config.Default()
	withJWT.Auth = config.Auth{Provider: config.AuthJWT, JWT: config.JWTAuth{Algorithms: []string{"HS256"}, Secret: exampleSecret, KeyClaim: "sub"}}
	withJWT.Envs = map[string]config.Env{"h5": {}, "kiosk": {Auth: config.Auth{Provider: config.AuthNone}}}
	mixed, err := auth.Build(withJWT, auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	withJWT.Envs = nil
	jwtOnly, err := auth.Build(withJWT, auth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	public := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	loopback := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	for _, tc := range []struct {
		name string
		addr net.Addr
		set  *auth.Set
		want string // "" for no warning
	}{
		{"none on every interface", public, none, "every env"},
		{"none on loopback", loopback, none, ""},
		{"jwt on every interface", public, jwtOnly, ""},
		{"one env on none", public, mixed, "envs kiosk"},
	} {
		var buf bytes.Buffer
		warnOpenListener(slog.New(slog.NewTextHandler(&buf, nil)), tc.addr, tc.set)
		switch {
		case tc.want == "" && buf.Len() > 0:
			t.Errorf("%s: unexpected warning %s", tc.name, buf.String())
		case tc.want != "" && (!strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), tc.want)):
			t.Errorf("%s: log %q, want a warning naming %q", tc.name, buf.String(), tc.want)
		}
	}

}

// relay serve with metrics.listen serves /metrics there only, behind the token.
func TestServeMetricsOnItsOwnListener(t *testing.T) {
	t.Setenv("RELAY_TEST_METRICS_TOKEN", "metrics-token-0123456789")
	p := startProcess(t, writeConfig(t, "listen: \"127.0.0.1:0\"\nmetrics:\n  listen: \"127.0.0.1:0\"\n  token: ${RELAY_TEST_METRICS_TOKEN}\n"))
	var addr string
	deadline := time.Now().Add(5 * time.Second)
	for addr == "" && time.Now().Before(deadline) {
		for _, line := range strings.Split(p.logText(), "\n") {
			var entry struct{ Message, Addr string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "metrics listening" {
				addr = entry.Addr
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if addr == "" {
		t.Fatalf("no metrics listener in the log:\n%s", p.logText())
	}
	status := func(url, token string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		url, token string
		want       int
	}{
		{"http://" + addr + "/metrics", "metrics-token-0123456789", 200},
		{"http://" + addr + "/metrics", "", 401},
		{"http://" + p.addr + "/metrics", "metrics-token-0123456789", 404},
	} {
		if got := status(tc.url, tc.token); got != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.url, got, tc.want)
		}
	}
	if strings.Contains(p.logText(), "metrics-token-0123456789") {
		t.Fatal("the metrics token is in the log")
	}
}
