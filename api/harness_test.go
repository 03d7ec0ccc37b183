package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/api"
	"github.com/pairrelay/relay/apiclient"
	"github.com/pairrelay/relay/auth"
	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	_ "github.com/pairrelay/relay/handlers" // the routes of the tests use built-in handlers
)

const testKey = "test-api-key-0123456789"

// relay is one in-process relay with its API on its own listener.
type relay struct {
	srv    *core.Server
	api    *api.Handler
	ws     string // ws://host:port/socket
	base   string // http://host:port
	client *apiclient.Client
}

// startRelay serves yamlText (with the API keyed by testKey) through bp (nil:
// the memory backplane), on the relay's own listener, as `relay serve`
// does when api.listen is empty.
func startRelay(t testing.TB, yamlText string, bp core.Backplane) *relay {
	t.Helper()
	cfg, err := config.Parse([]byte(yamlText), "test.yaml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.API.Keys = []string{testKey}
	cfg.Limits.MessagesPerSecond = 0
	return startRelayConfig(t, cfg, bp)
}

func startRelayConfig(t testing.TB, cfg *config.Config, bp core.Backplane) *relay {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if bp == nil {
		mem := core.NewMemoryBackplane(cfg.History)
		t.Cleanup(func() { _ = mem.Close() })
		bp = mem
	}
	srv := core.NewServer(cfg, log, bp)
	authSet, err := auth.Build(cfg, auth.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(authSet.Close)
	srv.SetAuth(authSet)
	p, err := core.BuildPipeline(context.Background(), cfg, "", log, srv.Metrics())
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	srv.Hub().SetPipeline(p)
	h := api.New(srv.API(), cfg.API, log)
	if cfg.API.Enabled() {
		srv.Mount(api.Prefix, h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		srv.Hub().SetPipeline(&core.Pipeline{}).Close()
	})
	base := "http://" + ln.Addr().String()
	return &relay{srv: srv, api: h, ws: "ws://" + ln.Addr().String() + cfg.Path, base: base,
		client: apiclient.New(base, testKey)}
}

// wsClient is a real v1 WebSocket client.
type wsClient struct {
	t    testing.TB
	conn *fws.Conn
}

// dial connects a v1 client and waits for its relay.hello, so that it has
// joined its room when dial returns.
func dial(t testing.TB, wsURL, query string) *wsClient {
	t.Helper()
	d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.Dial(wsURL+"?v=1&"+query, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", query, err, status)
	}
	c := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	if f := c.next(); f["type"] != "relay.hello" {
		t.Fatalf("first frame %v, want relay.hello", f)
	}
	return c
}

// next reads the next frame, skipping presence frames.
func (c *wsClient) next() map[string]any {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			c.t.Fatalf("frame %s: %v", b, err)
		}
		if f["type"] != "relay.presence" {
			return f
		}
	}
}

// waitPresence reads frames until env's presence is online.
func (c *wsClient) waitPresence(env string, online bool) {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			c.t.Fatalf("waiting for presence of %s: %v", env, err)
		}
		var f struct {
			Type string `json:"type"`
			Data struct {
				Env    string `json:"env"`
				Online bool   `json:"online"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &f) == nil && f.Type == "relay.presence" && f.Data.Env == env && f.Data.Online == online {
			return
		}
	}
}

// closeCode reads until the relay closes the connection and returns the code.
func (c *wsClient) closeCode() int {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *fws.CloseError
		if ok := asCloseError(err, &ce); !ok {
			c.t.Fatalf("connection ended without a close frame: %v", err)
		}
		return ce.Code
	}
}

func asCloseError(err error, ce **fws.CloseError) bool {
	e, ok := err.(*fws.CloseError)
	if ok {
		*ce = e
	}
	return ok
}

// call makes a raw API request and returns the status and decoded body.
func call(t testing.TB, method, url, key, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d with a body that is not a JSON object: %q", method, url, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}
