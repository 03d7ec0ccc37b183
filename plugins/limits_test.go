package plugins

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

// dialSince connects a v1 client that resumes after seq and returns it with
// its relay.hello.
func (r *testRelay) dialSince(token, env string, since uint64) (*client, map[string]any) {
	r.t.Helper()
	d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
	u := fmt.Sprintf("%s?v=1&token=%s&env=%s&since=%d", r.url, url.QueryEscape(token), env, since)
	conn, _, err := d.Dial(u, nil)
	if err != nil {
		r.t.Fatalf("dial %s/%s since %d: %v", token, env, since, err)
	}
	r.t.Cleanup(func() { _ = conn.Close() })
	c := &client{t: r.t, conn: conn}
	hello := c.read(5 * time.Second)
	if hello["type"] != "relay.hello" {
		r.t.Fatalf("first frame %v, want relay.hello", hello)
	}
	return c, hello
}

// expectError reads c's next frame and checks it is relay.error with code
// and id.
func expectError(t *testing.T, c *client, code, id string) {
	t.Helper()
	got := c.read(10 * time.Second)
	if d := dataOf(got); got["type"] != "relay.error" || d["code"] != code || d["id"] != id {
		t.Fatalf("sender got %.300v, want relay.error %s for %s", got, code, id)
	}
}

// expectType reads c's next frame and checks its type; it returns the frame.
func expectType(t *testing.T, c *client, typ string) map[string]any {
	t.Helper()
	got, err := c.tryRead(10 * time.Second)
	if err != nil {
		t.Fatalf("want %s, read: %v", typ, err)
	}
	if got["type"] != typ {
		t.Fatalf("got %.300v, want type %s", got, typ)
	}
	return got
}

// TestPluginOutputObeysTheFrameLimit: a plugin that answers a message
// larger than limits.max_frame_bytes (64 KiB here), alone or among others
// in a fan-out, fails: the sender gets handler_failed, the receiver gets
// nothing and stays connected, and a resume across it works, since no such
// message reaches the history.
func TestPluginOutputObeysTheFrameLimit(t *testing.T) {
	r := startRelay(t, `
listen: 127.0.0.1:0
limits: {messages_per_second: 0}
plugins:
  - name: tp
    command: TESTPLUGIN
routes:
  - match: {type: big}
    handlers: [{handler: plugin, plugin: tp}]
`)
	a := r.dial("tok", "a")
	b := r.dial("tok", "b")
	a.send(map[string]any{"type": "before", "id": "m0"})
	since := uint64(expectType(t, b, "before")["seq"].(float64))

	a.send(map[string]any{"type": "big", "data": map[string]any{"sizes": []int{3_500_000}}, "id": "big1"})
	expectError(t, a, "handler_failed", "big1")
	a.send(map[string]any{"type": "big", "data": map[string]any{"sizes": []int{10, 5_000_000}}, "id": "big2"})
	expectError(t, a, "handler_failed", "big2")
	// An answer within the limit still passes.
	a.send(map[string]any{"type": "big", "data": map[string]any{"sizes": []int{60_000}}, "id": "ok"})
	a.send(map[string]any{"type": "after", "id": "m1"})
	if got := expectType(t, b, "big.part"); len(got["data"].(string)) != 60_000-2 {
		t.Fatalf("b got data of %d bytes, want the 60 KB answer", len(got["data"].(string)))
	}
	expectType(t, b, "after")
	if !strings.Contains(r.logs.String(), "more than limits.max_frame_bytes (65536)") {
		t.Errorf("the log does not say why the answer failed")
	}

	_ = b.conn.Close()
	b2, hello := r.dialSince("tok", "b", since)
	if d := dataOf(hello); d["resumed"] != true {
		t.Fatalf("hello %v, want resumed:true", hello)
	}
	expectType(t, b2, "big.part")
	expectType(t, b2, "after")
	a.send(map[string]any{"type": "live"})
	expectType(t, b2, "live")
}

// TestPluginAnswerBeyondTheReadBoundIsNotRead: an answer larger than any
// relay would accept (max_messages × (max_frame_bytes + 1 KiB) + 64 KiB) is
// refused by gRPC before it is decoded: it breaks the connection, the call
// fails, and the plugin is restarted and serves again.
func TestPluginAnswerBeyondTheReadBoundIsNotRead(t *testing.T) {
	r := startRelay(t, `
listen: 127.0.0.1:0
limits: {messages_per_second: 0, max_frame_bytes: 1024}
plugins:
  - name: tp-bound
    command: TESTPLUGIN
routes:
  - match: {type: big}
    handlers: [{handler: plugin, plugin: tp-bound, max_messages: 1}]
`)
	a := r.dial("tok", "a")
	b := r.dial("tok", "b")
	pid := pluginPid("tp-bound")
	a.send(map[string]any{"type": "big", "data": map[string]any{"sizes": []int{1_000_000}}, "id": "huge"})
	expectError(t, a, "handler_failed", "huge")
	if !strings.Contains(r.logs.String(), "received message larger than max") {
		t.Fatalf("the answer was read: the log lacks gRPC's refusal")
	}
	waitFor(t, 10*time.Second, "the plugin to be restarted", func() bool {
		now := pluginPid("tp-bound")
		return now != 0 && now != pid
	})
	a.send(map[string]any{"type": "big", "data": map[string]any{"sizes": []int{100}}, "id": "small"})
	expectType(t, b, "big.part")
}

// TestPluginsTakeTheLargestMessagesRelayAccepts: with a frame limit above
// gRPC's default of 4 MiB, a message of 5 MB still reaches a Go plugin and
// the Node example and comes back; the plugin side must not refuse what
// relay sends.
func TestPluginsTakeTheLargestMessagesRelayAccepts(t *testing.T) {
	r := startRelay(t, `
listen: 127.0.0.1:0
limits: {messages_per_second: 0, max_frame_bytes: 8388608, send_queue_bytes: 67108864}
plugins:
  - name: tp-large
    command: TESTPLUGIN
  - name: node-large
    command: node
    args: [NODE_ENRICHER]
routes:
  - match: {type: addMaterial}
    handlers: [{handler: plugin, plugin: node-large}]
  - match: {type: "*"}
    handlers: [{handler: plugin, plugin: tp-large}]
`)
	a := r.dial("tok", "a")
	b := r.dial("tok", "b")
	blob := strings.Repeat("y", 5_000_000)
	for _, typ := range []string{"large", "addMaterial"} {
		a.send(map[string]any{"type": typ, "data": map[string]any{"blob": blob}, "id": typ})
		got := b.read(20 * time.Second)
		if got["type"] != typ || dataOf(got)["blob"] != blob {
			t.Fatalf("%s: b got %.200v, want the 5 MB message", typ, got)
		}
	}
}
