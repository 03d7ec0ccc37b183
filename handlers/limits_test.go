package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// liveRelay is a relay server on a loopback port running a config.
type liveRelay struct {
	t   *testing.T
	url string
}

func startLiveRelay(t *testing.T, yaml string) *liveRelay {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), "relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bp := core.NewMemoryBackplane(cfg.History)
	srv := core.NewServer(cfg, log, bp)
	p, err := core.BuildPipeline(context.Background(), cfg, "", log, srv.Metrics())
	if err != nil {
		t.Fatal(err)
	}
	srv.Hub().SetPipeline(p)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
		srv.Hub().SetPipeline(&core.Pipeline{}).Close()
		_ = bp.Close()
	})
	return &liveRelay{t: t, url: "ws://" + ln.Addr().String() + cfg.Path}
}

// wsClient is a wire-v1 client; hello is its relay.hello.
type wsClient struct {
	t     *testing.T
	conn  *fws.Conn
	hello map[string]any
}

// dial connects token/env; since < 0 means no resume.
func (r *liveRelay) dial(token, env string, since int64) *wsClient {
	r.t.Helper()
	u := r.url + "?v=1&token=" + url.QueryEscape(token) + "&env=" + env
	if since >= 0 {
		u += fmt.Sprint("&since=", since)
	}
	conn, _, err := (&fws.Dialer{HandshakeTimeout: 5 * time.Second}).Dial(u, nil)
	if err != nil {
		r.t.Fatalf("dial %s: %v", env, err)
	}
	r.t.Cleanup(func() { _ = conn.Close() })
	c := &wsClient{t: r.t, conn: conn}
	if c.hello = c.next(); c.hello["type"] != "relay.hello" {
		r.t.Fatalf("first frame %v, want relay.hello", c.hello)
	}
	return c
}

func (c *wsClient) send(v map[string]any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	if err := c.conn.WriteMessage(fws.TextMessage, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next is the next frame other than presence and acks.
func (c *wsClient) next() map[string]any {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.conn.ReadMessage()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			c.t.Fatalf("frame %.100q: %v", b, err)
		}
		if m["type"] != "relay.presence" && m["type"] != "relay.ack" {
			return m
		}
	}
}

func (c *wsClient) expect(typ string) map[string]any {
	c.t.Helper()
	m := c.next()
	if m["type"] != typ {
		c.t.Fatalf("got %.300v, want type %s", m, typ)
	}
	return m
}

// TestWebhookOutputObeysTheFrameLimit: an endpoint that answers a message
// larger than limits.max_frame_bytes (900 KB against 64 KiB; the body is
// within max_response_bytes), alone or in a fan-out, makes the webhook fail:
// the sender gets handler_failed, the receiver nothing, and a resume across
// it works.
func TestWebhookOutputObeysTheFrameLimit(t *testing.T) {
	big := `"` + strings.Repeat("x", 900_000) + `"`
	var endpoint *hook
	endpoint = newHook(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
		req, _ := endpoint.last.Load().(webhookRequest)
		switch req.Type {
		case "big":
			_, _ = io.WriteString(w, `{"data":`+big+`}`)
		case "fan":
			_, _ = io.WriteString(w, `[{"type":"fan.small"},{"data":`+big+`}]`)
		}
	})
	r := startLiveRelay(t, `
limits: {messages_per_second: 0}
routes:
  - match: {type: big}
    handlers: [{handler: webhook, url: "`+endpoint.URL+`"}]
  - match: {type: fan}
    handlers: [{handler: webhook, url: "`+endpoint.URL+`"}]
`)
	a := r.dial("tok", "a", -1)
	b := r.dial("tok", "b", -1)
	a.send(map[string]any{"type": "before"})
	since := int64(b.expect("before")["seq"].(float64))
	for _, typ := range []string{"big", "fan"} {
		a.send(map[string]any{"type": typ, "id": typ})
		got := a.expect("relay.error")
		if d := got["data"].(map[string]any); d["code"] != "handler_failed" || d["id"] != typ {
			t.Fatalf("%s: sender got %v, want handler_failed", typ, got)
		}
	}
	a.send(map[string]any{"type": "after"})
	b.expect("after")

	_ = b.conn.Close()
	b2 := r.dial("tok", "b", since)
	if d := b2.hello["data"].(map[string]any); d["resumed"] != true {
		t.Fatalf("hello %v, want resumed:true", b2.hello)
	}
	b2.expect("after")
	a.send(map[string]any{"type": "live"})
	b2.expect("live")
}
