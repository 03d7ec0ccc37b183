package plugins

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	pb "github.com/pairrelay/relay/plugins/internal/proto/relayplugin/v1"
)

func TestResults(t *testing.T) {
	h := &Handler{Plugin: "p", MaxMessages: 2}
	orig := &core.Message{Type: "t", Data: json.RawMessage(`{"a":1}`), To: []string{"b"}, ID: "c1", From: "a", TS: 7, Token: "secret"}
	same := &pb.Message{Type: "t", Data: []byte(`{"a":1}`), To: []string{"b"}, HasTo: true}

	out, err := h.results(orig, []*pb.Message{same})
	if err != nil || len(out) != 1 || out[0] != orig {
		t.Fatalf("an unchanged answer: %v %v, want the original message itself", out, err)
	}
	out, err = h.results(orig, []*pb.Message{{Type: "u", Data: []byte(`[2]`), Id: "forged", From: "forged", Ts: 1}})
	if err != nil || len(out) != 1 {
		t.Fatal(err)
	}
	if m := out[0]; m == orig || m.Type != "u" || string(m.Data) != `[2]` || m.To != nil || m.ID != "c1" || m.From != "a" || m.TS != 7 || m.Token != "secret" {
		t.Fatalf("changed answer: %+v", m)
	}
	if string(orig.Data) != `{"a":1}` || orig.Type != "t" {
		t.Fatal("the original was modified")
	}
	out, _ = h.results(orig, []*pb.Message{{Type: "", Data: []byte(`{"a":1}`), HasTo: true}})
	if out[0].Type != "t" || out[0].To == nil || len(out[0].To) != 0 {
		t.Fatalf("empty type keeps the original's; has_to with no envs is nobody: %+v", out[0])
	}
	out, _ = h.results(orig, nil)
	if out != nil {
		t.Fatalf("no messages: %v, want a drop", out)
	}
	for _, bad := range []struct {
		msgs []*pb.Message
		want string
	}{
		{[]*pb.Message{{Type: "relay.hello"}}, "not starting with relay."},
		{[]*pb.Message{{Type: strings.Repeat("x", 129)}}, "1 to 128"},
		{[]*pb.Message{{Type: "t", Data: []byte("{")}}, "not JSON"},
		{[]*pb.Message{{Type: "t", HasTo: true, To: []string{"Bad Env"}}}, "not an env name"},
		{[]*pb.Message{{}, {}, {}}, "more than max_messages (2)"},
		{[]*pb.Message{{}, {Data: []byte("x")}}, "message 1: data that is not JSON"},
	} {
		if _, err := h.results(orig, bad.msgs); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: err %v, want %q", bad.msgs, err, bad.want)
		}
	}
}

func TestConfigJSON(t *testing.T) {
	hc, err := config.NewHandlerConfig(`handler: plugin
plugin: p
config:
  name: x
  limits: {max: 3, ratio: 0.5}
  list: [a, {b: true}]
  1: numeric key
`, "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{}
	if err := hc.Decode(h); err != nil {
		t.Fatal(err)
	}
	b, err := configJSON(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if got["name"] != "x" || got["limits"].(map[string]any)["ratio"] != 0.5 || got["list"].([]any)[1].(map[string]any)["b"] != true || got["1"] != "numeric key" {
		t.Fatalf("config JSON %s", b)
	}
	if b, _ := configJSON(nil); string(b) != "{}" {
		t.Fatalf("absent config: %s", b)
	}
}

// TestSeedTextPassesByteForByte: a plugin that passes a seed client's
// message unchanged lets seed receivers get the original text exactly.
func TestSeedTextPassesByteForByte(t *testing.T) {
	r := startRelay(t, `
listen: 127.0.0.1:0
plugins: [{name: tp, command: TESTPLUGIN}]
routes:
  - match: {type: "*"}
    handlers: [{handler: plugin, plugin: tp}]
`)
	dial := func(env string) *fws.Conn {
		d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
		c, _, err := d.Dial(r.url+"?token=seed&env="+env, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial("h5"), dial("miniapp")
	// A seed client hears no hello: wait until both sessions joined, or
	// the first message may be published before the receiver is there.
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(r.logs.String(), `msg="session open"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two seed sessions did not open within 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	for _, text := range []string{`{"type":"other",  "data":{"z":1,"a" : [1,2]}}`, `{"type":"upper","data":{"text":"hi"}}`} {
		if err := a.WriteMessage(fws.TextMessage, []byte(text)); err != nil {
			t.Fatal(err)
		}
		_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, frame, err := b.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var inner string
		if err := json.Unmarshal(frame, &inner); err != nil {
			t.Fatalf("seed frame %s: %v", frame, err)
		}
		if strings.Contains(text, "other") && inner != text {
			t.Errorf("seed receiver got %s, want the sender's text %s", inner, text)
		}
		if strings.Contains(text, "upper") && inner != `{"type":"upper","data":{"tag":"","text":"HI"}}` {
			t.Errorf("seed receiver got %s for a changed message", inner)
		}
	}
}
