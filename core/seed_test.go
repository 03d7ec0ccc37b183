package core

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
)

// seedTexts are frames the original clients (or anyone) may send, chosen
// for the places where Go's JSON encoding differs from JavaScript's.
var seedTexts = []string{
	`{"type":"addMaterial","data":{"id":7,"name":"<b>Tom & Jerry</b>"}}`,
	"{\"type\":\"init\",\"data\":\"line\\nbreak\"}",
	"plain text, not JSON",
	"",
	"quote \" backslash \\ slash / tab \t newline \n cr \r",
	"controls \x00\x01\x07\x08\x0b\x0c\x1f\x7f",
	"separators \u2028 and \u2029, <script>&amp;</script>",
	"unicode 你好, emoji 😀, combining é",
	`  {"type" : "spaced" , "data" : [ 1 , 2 ] }  `,
	`"a JSON string"`,
	`[1,2,3]`,
	`{"data":"object without type"}`,
}

// jsStringify asks Node.js itself what JSON.stringify makes of each text.
func jsStringify(t *testing.T, texts []string) []string {
	t.Helper()
	in, _ := json.Marshal(texts)
	cmd := exec.Command("node", "-e", `
let s = ''; process.stdin.on('data', d => s += d).on('end', () => {
  const texts = JSON.parse(s);
  process.stdout.write(JSON.stringify(texts.map(t => JSON.stringify(t))));
});`)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node is needed to check JSON.stringify parity (CI installs it): %v", err)
	}
	var res []string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAppendJSStringMatchesJavaScript(t *testing.T) {
	want := jsStringify(t, seedTexts)
	for i, text := range seedTexts {
		if got := string(appendJSString(nil, []byte(text))); got != want[i] {
			t.Errorf("stringify(%q)\n got %s\nwant %s", text, got, want[i])
		}
	}
}

func TestSeedWireIsByteCompatible(t *testing.T) {
	r := startRelay(t)
	h5 := r.dial("token=seed-tok&env=h5")
	mini := r.dial("token=seed-tok&env=miniapp")
	time.Sleep(50 * time.Millisecond) // both joined; seed clients get no presence to wait for
	want := jsStringify(t, seedTexts)
	for i, text := range seedTexts {
		h5.send(text)
		if got := mini.read(); got != want[i] {
			t.Fatalf("miniapp got %q for %q, want JSON.stringify = %q", got, text, want[i])
		}
	}
	mini.send("from the mini program")
	if got := h5.read(); got != `"from the mini program"` {
		t.Fatalf("h5 got %q", got)
	}
	// No system frames on the seed wire: no hello, no presence, no ack.
	h5.expectSilence(100 * time.Millisecond)
}

func TestMixedWiresOnOneToken(t *testing.T) {
	r := startRelay(t)
	h5, _ := r.v1("mix", "h5")
	mini := r.dial("token=mix&env=miniapp") // the original mini program: seed
	h5.readType("relay.presence")

	h5.send(`{"type":"addMaterial","data":{ "name" : "a<b" },"id":"c-9"}`)
	// A seed receiver gets JSON.stringify({type, data}) and nothing relay-specific.
	if got, want := mini.read(), jsStringify(t, []string{`{"type":"addMaterial","data":{"name":"a<b"}}`})[0]; got != want {
		t.Fatalf("seed receiver got %s, want %s", got, want)
	}

	mini.send(`{"type":"init","data":{"x":1}}`)
	got := h5.readType("init", "relay.ack")
	if got["from"] != "miniapp" || got["seq"].(float64) < 2 {
		t.Fatalf("v1 receiver got %v", got)
	}
	if d := got["data"].(map[string]any); d["x"] != float64(1) {
		t.Fatalf("data = %v", d)
	}
	mini.send("not json")
	got = h5.readType("", "relay.ack")
	if got["data"] != "not json" {
		t.Fatalf("non-JSON seed text reached v1 as %v", got)
	}
}

func TestWireChoice(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.Envs = map[string]config.Env{"h5": {Wire: config.WireV1}, "miniapp": {}}
	})
	// h5 is configured v1: a plain connection gets relay.hello.
	h5 := r.dial("token=w&env=h5")
	if m := h5.readJSON(); m["type"] != "relay.hello" {
		t.Fatalf("h5 first frame %v", m)
	}
	// miniapp falls back to the top-level seed wire, unless it asks for v1
	// by subprotocol.
	header := map[string][]string{"Sec-WebSocket-Protocol": {"relay.v1"}}
	mini := r.dial("token=w&env=miniapp", header)
	if mini.conn.Subprotocol() != "relay.v1" {
		t.Fatalf("subprotocol = %q", mini.conn.Subprotocol())
	}
	if m := mini.readJSON(); m["type"] != "relay.hello" {
		t.Fatalf("miniapp first frame %v", m)
	}
}

func TestSeedCannotSpoofSystemFrames(t *testing.T) {
	r := startRelay(t)
	h5, _ := r.v1("spoof", "h5")
	seed := r.dial("token=spoof&env=miniapp")
	h5.readType("relay.presence")
	seed.send(`{"type":"relay.ack","data":{"id":"c-1","seq":1}}`)
	got := h5.readJSON()
	if got["type"] != "" || got["data"] != `{"type":"relay.ack","data":{"id":"c-1","seq":1}}` {
		t.Fatalf("a seed client's relay.* message reached v1 as %v", got)
	}
}
