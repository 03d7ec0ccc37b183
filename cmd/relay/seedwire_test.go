package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

// seedClient speaks exactly what the original clients speak: a plain
// connection (no v=1, no subprotocol, no headers) sending text frames. A
// goroutine collects what it receives, so that waiting never breaks the
// connection the way an expired read deadline would.
type seedClient struct {
	t      *testing.T
	name   string
	conn   *fws.Conn
	frames chan string
}

func dialSeed(t *testing.T, addr, token, env string) *seedClient {
	t.Helper()
	conn, _, err := fws.DefaultDialer.Dial("ws://"+addr+"/socket?token="+token+"&env="+env, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", env, err)
	}
	c := &seedClient{t: t, name: env, conn: conn, frames: make(chan string, 4096)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.frames)
		for {
			kind, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if kind != fws.TextMessage {
				c.frames <- fmt.Sprintf("<frame of kind %d: %q>", kind, b)
				continue
			}
			c.frames <- string(b)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return c
}

func (c *seedClient) send(text string) {
	c.t.Helper()
	if err := c.conn.WriteMessage(fws.TextMessage, []byte(text)); err != nil {
		c.t.Fatalf("%s send: %v", c.name, err)
	}
}

// next returns the next frame, or "" and false when none came within wait.
func (c *seedClient) next(wait time.Duration) (string, bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case f, ok := <-c.frames:
		if !ok {
			c.t.Fatalf("%s: the connection ended", c.name)
		}
		return f, true
	case <-timer.C:
		return "", false
	}
}

// seedPair connects an original mini program and an original H5 page on one
// token and returns once each reaches the other. Seed clients get no
// presence to wait for, so the H5 page sends probes until one arrives; the
// probes still on their way are read off, leaving both streams empty.
func seedPair(t *testing.T, addr, token string) (h5, mini *seedClient) {
	t.Helper()
	mini = dialSeed(t, addr, token, "miniapp")
	h5 = dialSeed(t, addr, token, "h5")
	for _, dir := range []struct{ from, to *seedClient }{{h5, mini}, {mini, h5}} {
		sent, seen := 0, 0
		for seen == 0 {
			if sent == 50 {
				t.Fatalf("%s never heard %s's %d probes", dir.to.name, dir.from.name, sent)
			}
			sent++
			dir.from.send(fmt.Sprintf("probe %d", sent))
			if f, ok := dir.to.next(100 * time.Millisecond); ok {
				seen = probeNumber(t, f)
			}
		}
		// Every probe after the first one heard arrives too, in order.
		for seen < sent {
			f, ok := dir.to.next(10 * time.Second)
			if !ok {
				t.Fatalf("%s: probe %d of %d never came", dir.to.name, seen+1, sent)
			}
			if n := probeNumber(t, f); n != seen+1 {
				t.Fatalf("%s: probe %d after probe %d", dir.to.name, n, seen)
			}
			seen++
		}
	}
	return h5, mini
}

func probeNumber(t *testing.T, frame string) int {
	t.Helper()
	var text string
	var n int
	if json.Unmarshal([]byte(frame), &text) != nil {
		t.Fatalf("a probe arrived as %q, not as a JSON string", frame)
	}
	if _, err := fmt.Sscanf(text, "probe %d", &n); err != nil {
		t.Fatalf("a probe arrived as %q", frame)
	}
	return n
}

// jsStringify asks Node.js what JSON.stringify makes of each text: the
// original server sent ws.send(JSON.stringify(text)).
func jsStringify(t *testing.T, texts []string) []string {
	t.Helper()
	in, err := json.Marshal(texts)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "-e", `
let s = ''; process.stdin.setEncoding('utf8').on('data', d => s += d).on('end', () => {
  process.stdout.write(JSON.stringify(JSON.parse(s).map(t => JSON.stringify(t))));
});`)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node is needed to compute JSON.stringify (CI installs it): %v", err)
	}
	var res []string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if len(res) != len(texts) {
		t.Fatalf("node stringified %d texts of %d", len(res), len(texts))
	}
	return res
}

// TestShippedConfigKeepsTheSeedWireByteExact runs the relay.yaml at the
// repository root, as shipped, between an original H5 page (it sends
// {"type","data"} text) and an original mini program (it sends plain
// strings): each must receive exactly JSON.stringify of what the other sent,
// whatever the type and data, as with the old express-ws relay.
func TestShippedConfigKeepsTheSeedWireByteExact(t *testing.T) {
	h5Texts := []string{
		`{"type":"init","data":{"user":"u-1","page":"editor"}}`,
		// What the original H5 page sends when the user adds a material.
		`{"type":"addMaterial","data":{"url":"https://cdn.example.com/m/1.png","width":640,"height":480}}`,
		`{"type":"addMaterial","data":{"id":7,"name":"wood"}}`,
		`{"type":"addMaterial","data":{"id":"m-2","name":"<b>Tom & Jerry</b> <script>&amp;</script>"}}`,
		"{\"type\":\"addMaterial\",\"data\":{\"name\":\"unicode 你好 😀 é, separators \u2028 and \u2029 raw\"}}",
		`{"type":"addMaterial","data":{"name":"separators \u2028 and \u2029 escaped, \u003c too"}}`,
		`{"type":"addMaterial","data":{"name":"escapes \"q\" \\ \/ \n \t \u0000 \ud83d\ude00"}}`,
		`{"type":"addMaterial","data":{"id":8}}`,
		`{"type":"addMaterial","data":{"id":9,"name":""}}`,
		`{"type":"addMaterial","data":{"id":true,"name":["not","a","string"]}}`,
		`{"type":"addMaterial","data":"just a string"}`,
		`{"type":"addMaterial","data":[1,2.50,1e3,-0,1.0E-2]}`,
		`{"type":"addMaterial","data":null}`,
		`{"type":"addMaterial"}`,
		`{ "type" : "addMaterial" , "data" : { "id" : 10 , "name" : "spaced" } }`,
		`{"type":"addMaterial","data":{"id":11,"name":"first","name":"second"}}`,
		`{"data":{"id":12,"name":"data before type"},"type":"addMaterial"}`,
		`{"type":"addMaterial","data":{"id":13,"name":"extra key"},"extra":1}`,
		`{"type":"somethingElse","data":{"x":1}}`,
		`{"type":"","data":1}`,
		`{"type":"relay.ack","data":{"id":"x"}}`,
	}
	// More materials at once than a route's rate limit of 40 would let through.
	for i := range 45 {
		h5Texts = append(h5Texts, fmt.Sprintf(`{"type":"addMaterial","data":{"id":%d,"name":"bulk %d"}}`, 100+i, i))
	}
	h5Texts = append(h5Texts, `{"type":"init","data":"last from h5"}`)
	miniTexts := []string{
		"hello from the mini program",
		"addMaterial",
		"unicode 你好 😀 é, <script>&amp;</script>, separators \u2028 and \u2029",
		"quote \" backslash \\ slash / newline \n tab \t controls \x01\x1f\x7f",
		`{"type":"addMaterial","data":{"id":1,"name":"a JSON-looking string"}}`,
		"",
		"last from the mini program",
	}

	p := startProcess(t, shippedConfig(t, ""))
	h5, mini := seedPair(t, p.addr, "seed-byte-exact")
	for _, text := range h5Texts {
		h5.send(text)
	}
	for _, text := range miniTexts {
		mini.send(text)
	}
	for _, dir := range []struct {
		from, to *seedClient
		texts    []string
	}{{h5, mini, h5Texts}, {mini, h5, miniTexts}} {
		want := jsStringify(t, dir.texts)
		for i, text := range dir.texts {
			got, ok := dir.to.next(10 * time.Second)
			if !ok {
				t.Fatalf("%s → %s: message %d of %d never arrived: %q\nrelay log:\n%s",
					dir.from.name, dir.to.name, i+1, len(dir.texts), text, p.logText())
			}
			if got != want[i] {
				t.Fatalf("%s → %s: message %d, sent\n  %q\nreceived\n  %s\nwant JSON.stringify of the sent text\n  %s",
					dir.from.name, dir.to.name, i+1, text, got, want[i])
			}
		}
	}
}

// exampleRoutesConfig is the shipped relay.yaml with its commented example
// route enabled in place of the addMaterial route, the way its comment says
// to enable it, so the example is known to work.
func exampleRoutesConfig(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	live := strings.Index(text, "\n  - name: addMaterial\n")
	example := strings.Index(text, "\n#  - name: addMaterial\n")
	if live < 0 || example < live {
		t.Fatal("relay.yaml: want the addMaterial route followed by the commented example route")
	}
	var b strings.Builder
	b.WriteString(text[:live+1])
	for line := range strings.SplitSeq(strings.TrimSuffix(text[example+1:], "\n"), "\n") {
		uncommented, ok := strings.CutPrefix(line, "#")
		if !ok {
			t.Fatalf("relay.yaml: the example route ends at %q: it must run to the end of the file", line)
		}
		b.WriteString(uncommented + "\n")
	}
	body := strings.Replace(b.String(), `listen: ":8080"`, `listen: "127.0.0.1:0"`, 1)
	if !strings.Contains(body, "handler: transform") {
		t.Fatalf("the example route has no transform:\n%s", body)
	}
	return writeConfig(t, body)
}
