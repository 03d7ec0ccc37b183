package plugins

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/auth"
	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

const authPluginConfig = `
plugins: [{name: tp, command: TESTPLUGIN}, {name: enricher, command: ENRICHER}]
envs: {h5: {}, miniapp: {}}
auth:
  provider: plugin
  plugin: {name: tp, config: {tag: T}, headers: [User-Agent]}
`

// buildAuth builds the auth providers of a config with a real plugin process.
func buildAuth(t *testing.T, body string) (*auth.Set, *logBuffer) {
	t.Helper()
	path := writeConfig(t, body)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	log, logs := newLog(t)
	set, err := auth.Build(cfg, auth.Options{Dir: filepath.Dir(path), Log: log})
	if err != nil {
		t.Fatalf("auth.Build: %v", err)
	}
	t.Cleanup(set.Close)
	return set, logs
}

// The plugin's Authenticate admits (key, envs, expiry, claims, the allowed
// headers), refuses, says expired, and its failures refuse without telling
// the client why.
func TestPluginAuthProvider(t *testing.T) {
	set, logs := buildAuth(t, authPluginConfig)
	p := set.For("h5")
	if !p.Authenticated() {
		t.Fatal("provider plugin must count as authenticated")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	headers := map[string]string{"User-Agent": "test-agent", "Cookie": "secret-cookie"}
	ask := func(cred string) (*auth.Identity, error) {
		return p.Authenticate(ctx, &auth.Request{Credential: cred, Env: "h5", IP: "127.0.0.1",
			Header: func(name string) string { return headers[name] }})
	}

	before := time.Now()
	id, err := ask("admit:order-7:h5,web:60")
	if err != nil {
		t.Fatal(err)
	}
	if id.Key != "order-7" || strings.Join(id.Envs, ",") != "h5,web" {
		t.Fatalf("identity %+v", id)
	}
	if d := id.Expires.Sub(before); d < 59*time.Second || d > 61*time.Second+time.Minute {
		t.Fatalf("expires in %s, want about 60s", d)
	}
	if id.Claims["env"] != "h5" || id.Claims["ua"] != "test-agent" || id.Claims["tag"] != "T" {
		t.Fatalf("claims %v: want the env, the allowed header and the auth config's tag", id.Claims)
	}
	if _, ok := id.Claims["cookie"]; ok {
		t.Fatal("a header outside auth.plugin.headers reached the plugin")
	}

	id, err = ask("admit:k:*:0")
	if err != nil || id.Envs != nil || !id.Expires.IsZero() {
		t.Fatalf("any env, no expiry: %+v %v", id, err)
	}

	for cred, want := range map[string]auth.Error{
		"refuse":        {Code: "unauthorized", Message: "not on the list"},
		"expired":       {Code: "token_expired", Message: "that credential is too old"},
		"admit:k:*:-5":  {Code: "token_expired", Message: "the credential has expired: get a new one"},
		"admit:k:h 5:0": {}, // not an env name: a failure
		"admit::*:0":    {}, // no key: a failure
		"fail":          {},
		"panic":         {},
	} {
		_, err := ask(cred)
		var ae *auth.Error
		switch {
		case err == nil:
			t.Errorf("%s: admitted", cred)
		case want.Code != "" && (!errors.As(err, &ae) || *ae != want):
			t.Errorf("%s: %v, want %v", cred, err, &want)
		case want.Code == "" && errors.As(err, &ae):
			t.Errorf("%s: %v, want a failure (not a refusal)", cred, err)
		case want.Code == "" && auth.AsError(err).Message == err.Error():
			t.Errorf("%s: the failure %q would reach the client", cred, err)
		}
	}
	waitFor(t, 5*time.Second, "the failure in the log", func() bool {
		return strings.Contains(logs.String(), "the user store is down")
	})
}

// A plugin without Authenticate (the Go example) refuses every connection,
// and says why in the log.
func TestPluginAuthUnimplemented(t *testing.T) {
	set, logs := buildAuth(t, strings.Replace(authPluginConfig, "{name: tp, config: {tag: T}", "{name: enricher, config: {field: x}", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := set.For("h5").Authenticate(ctx, &auth.Request{Credential: "admit:k:*:0", Env: "h5"}); err == nil ||
		!strings.Contains(err.Error(), "does not implement Authenticate") {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(logs.String(), "does not implement Authenticate") {
		t.Fatalf("log:\n%s", logs)
	}
}

func TestPluginAuthConfigErrors(t *testing.T) {
	for body, want := range map[string]string{
		"plugins: [{name: tp, command: TESTPLUGIN}]\nauth: {provider: plugin, plugin: {name: other}}": `auth.plugin.name: "other" is not defined in plugins: (defined: tp)`,
		"auth: {provider: plugin, plugin: {name: tp}}":                                                `auth.plugin.name: "tp" is not defined: plugins: is empty`,
		"auth: {provider: plugin}": "auth.provider: plugin needs plugin.name",
		"auth: {provider: jwt, jwt: {algorithms: [HS256], secret: 0123456789abcdef0123456789abcdef}, plugin: {name: tp}}": "ignores the plugin settings",
		"plugins: [{name: tp, command: TESTPLUGIN}]\nauth: {provider: plugin, plugin: {name: tp, timeout: 2m}}":           "auth.plugin.timeout: must be more than 0 and at most 1m",
	} {
		_, err := config.Load(writeConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s:\n got %v\nwant %q", body, err, want)
		}
	}
}

// Over WebSockets: two credentials the plugin maps to one pairing key pair,
// the allowed headers reach it, refusals are 401/403 before the upgrade.
func TestPluginAuthConnections(t *testing.T) {
	path := writeConfig(t, authPluginConfig)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLog(t)
	set, err := auth.Build(cfg, auth.Options{Dir: filepath.Dir(path), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bp := core.NewMemoryBackplane(cfg.History)
	srv := core.NewServer(cfg, log, bp)
	srv.SetAuth(set)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
		_ = bp.Close()
	})
	base := "ws://" + ln.Addr().String() + cfg.Path

	dial := func(cred, env string) (*client, *http.Response, error) {
		d := fws.Dialer{HandshakeTimeout: 10 * time.Second}
		conn, resp, err := d.Dial(base+"?v=1&env="+env, http.Header{"Authorization": {"Bearer " + cred}, "User-Agent": {"ua-" + env}})
		if err != nil {
			return nil, resp, err
		}
		t.Cleanup(func() { _ = conn.Close() })
		c := &client{t: t, conn: conn}
		if hello := c.read(10 * time.Second); hello["type"] != "relay.hello" {
			t.Fatalf("first frame %v, want relay.hello", hello)
		}
		return c, resp, nil
	}
	h5, _, err := dial("admit:pair-1:h5:60", "h5")
	if err != nil {
		t.Fatal(err)
	}
	mini, _, err := dial("admit:pair-1:miniapp:60", "miniapp")
	if err != nil {
		t.Fatal(err)
	}
	h5.send(map[string]any{"type": "claims", "data": map[string]any{"n": 1}, "id": "m1"})
	for {
		m := mini.read(10 * time.Second)
		if m["type"] == "claims" {
			if m["from"] != "h5" {
				t.Fatalf("got %v", m)
			}
			break
		}
	}

	for _, tt := range []struct {
		cred, env string
		status    int
		code      string
	}{
		{"refuse", "h5", 401, "unauthorized"},
		{"expired", "h5", 401, "token_expired"},
		{"fail", "h5", 401, "unauthorized"},
		{"admit:pair-1:h5:60", "miniapp", 403, "env_not_allowed"},
	} {
		_, resp, err := dial(tt.cred, tt.env)
		if err == nil || resp == nil {
			t.Fatalf("%s as %s: connected (%v)", tt.cred, tt.env, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || !strings.Contains(string(body), `"`+tt.code+`"`) {
			t.Errorf("%s as %s: %d %s, want %d %s", tt.cred, tt.env, resp.StatusCode, body, tt.status, tt.code)
		}
		if strings.Contains(string(body), "user store") {
			t.Errorf("the plugin's failure reached the client: %s", body)
		}
	}
}

// The Node example implements Authenticate too: a known API key admits with
// its pairing key, an expiry and claims; an unknown one is refused.
func TestPluginAuthNode(t *testing.T) {
	set, _ := buildAuth(t, `
plugins: [{name: ne, command: node, args: [NODE_ENRICHER]}]
auth:
  provider: plugin
  plugin: {name: ne, config: {api_keys: "k-1=order-7,k-2=order-8", source: test}}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before := time.Now()
	id, err := set.For("h5").Authenticate(ctx, &auth.Request{Credential: "k-2", Env: "h5"})
	if err != nil {
		t.Fatal(err)
	}
	if id.Key != "order-8" || id.Envs != nil || id.Claims["source"] != "test" || id.Claims["env"] != "h5" {
		t.Fatalf("identity %+v", id)
	}
	if d := id.Expires.Sub(before); d < 59*time.Minute || d > 61*time.Minute {
		t.Fatalf("expires in %s, want about 1h", d)
	}
	_, err = set.For("h5").Authenticate(ctx, &auth.Request{Credential: "k-3", Env: "h5"})
	var ae *auth.Error
	if !errors.As(err, &ae) || ae.Code != "unauthorized" || ae.Message != "unknown API key" {
		t.Fatalf("unknown key: %v", err)
	}
}
