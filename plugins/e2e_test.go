package plugins

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const e2eConfig = `
listen: 127.0.0.1:0
limits: {messages_per_second: 0}
plugins:
  - name: tp
    command: TESTPLUGIN
  - name: node
    command: node
    args: [NODE_ENRICHER]
  - name: enricher
    command: ENRICHER
routes:
  - match: {type: addMaterial}
    handlers:
      - handler: plugin
        plugin: node
        config: {field: at}
  - match: {type: goMaterial}
    handlers:
      - handler: plugin
        plugin: enricher
  - match: {type: fail.pass}
    on_error: pass
    handlers: [{handler: plugin, plugin: tp, config: {tag: t1}}]
  - match: {type: fail.drop}
    on_error: drop
    handlers: [{handler: plugin, plugin: tp, config: {tag: t1}}]
  - match: {type: "*"}
    handlers:
      - handler: plugin
        plugin: tp
        config: {tag: t1}
`

// TestEndToEnd sends messages over real WebSockets through routes whose
// handler is a plugin, and checks what each side gets.
func TestEndToEnd(t *testing.T) {
	r := startRelay(t, e2eConfig)
	a := r.dial("tok", "a")
	b := r.dial("tok", "b")

	t.Run("transform", func(t *testing.T) {
		a.send(map[string]any{"type": "upper", "data": map[string]any{"text": "hi"}})
		got := b.read(5 * time.Second)
		if got["type"] != "upper" || dataOf(got)["text"] != "HI" || dataOf(got)["tag"] != "t1" || got["from"] != "a" {
			t.Fatalf("b got %v, want upper with text HI, tag t1 from a", got)
		}
	})
	t.Run("pass unchanged", func(t *testing.T) {
		a.send(map[string]any{"type": "other", "data": map[string]any{"x": 1}, "id": "m1"})
		got := b.read(5 * time.Second)
		if got["type"] != "other" || dataOf(got)["x"] != float64(1) || got["id"] != "m1" {
			t.Fatalf("b got %v", got)
		}
	})
	t.Run("drop", func(t *testing.T) {
		a.send(map[string]any{"type": "drop", "data": 1})
		a.send(map[string]any{"type": "after.drop"})
		if got := b.read(5 * time.Second); got["type"] != "after.drop" {
			t.Fatalf("b got %v, want the dropped message skipped", got)
		}
	})
	t.Run("reject", func(t *testing.T) {
		a.send(map[string]any{"type": "reject", "id": "r1"})
		got := a.read(5 * time.Second)
		d := dataOf(got)
		if got["type"] != "relay.error" || d["code"] != "forbidden" || d["message"] != "no thanks" || d["id"] != "r1" {
			t.Fatalf("a got %v, want relay.error forbidden", got)
		}
	})
	t.Run("fan-out", func(t *testing.T) {
		a.send(map[string]any{"type": "fanout"})
		for i := 1; i <= 3; i++ {
			got := b.read(5 * time.Second)
			if got["type"] != "fanout.part" || dataOf(got)["part"] != float64(i) {
				t.Fatalf("b got %v, want fanout.part %d", got, i)
			}
		}
	})
	t.Run("failure on_error reject", func(t *testing.T) {
		a.send(map[string]any{"type": "fail", "id": "f1"})
		got := a.read(5 * time.Second)
		if got["type"] != "relay.error" || dataOf(got)["code"] != "handler_failed" {
			t.Fatalf("a got %v, want relay.error handler_failed", got)
		}
		if strings.Contains(fmt.Sprint(got), "boom") {
			t.Errorf("the failure's text reached the sender: %v", got)
		}
		if !strings.Contains(r.logs.String(), "boom") {
			t.Errorf("the failure's text is not in the log")
		}
	})
	t.Run("failure on_error pass", func(t *testing.T) {
		a.send(map[string]any{"type": "fail.pass", "data": "as is"})
		if got := b.read(5 * time.Second); got["type"] != "fail.pass" || got["data"] != "as is" {
			t.Fatalf("b got %v, want fail.pass unchanged", got)
		}
	})
	t.Run("failure on_error drop", func(t *testing.T) {
		a.send(map[string]any{"type": "fail.drop"})
		a.send(map[string]any{"type": "after.fail"})
		if got := b.read(5 * time.Second); got["type"] != "after.fail" {
			t.Fatalf("b got %v, want fail.drop dropped", got)
		}
	})
	t.Run("invalid answers and panics are failures", func(t *testing.T) {
		for _, typ := range []string{"badjson", "panic"} {
			a.send(map[string]any{"type": typ, "id": typ})
			got := a.read(5 * time.Second)
			if got["type"] != "relay.error" || dataOf(got)["code"] != "handler_failed" {
				t.Fatalf("%s: a got %v, want relay.error handler_failed", typ, got)
			}
		}
		a.send(map[string]any{"type": "upper", "data": map[string]any{"text": "still here"}})
		if got := b.read(5 * time.Second); dataOf(got)["text"] != "STILL HERE" {
			t.Fatalf("b got %v after a panic", got)
		}
	})
	t.Run("plugin output in the log", func(t *testing.T) {
		a.send(map[string]any{"type": "log", "data": map[string]any{"text": "hello from the plugin"}})
		b.read(5 * time.Second)
		for _, want := range []string{"hello from the plugin", "stdout: hello from the plugin"} {
			waitFor(t, 5*time.Second, "the plugin's line "+want+" in relay's log", func() bool {
				for _, line := range strings.Split(r.logs.String(), "\n") {
					if strings.Contains(line, want) && strings.Contains(line, "plugin=tp") {
						return true
					}
				}
				return false
			})
		}
	})
	t.Run("go example", func(t *testing.T) {
		a.send(map[string]any{"type": "goMaterial", "data": map[string]any{"title": "rose"}})
		got := b.read(5 * time.Second)
		if d := dataOf(got); d["titleUpper"] != "ROSE" || d["enrichedAt"] == nil {
			t.Fatalf("b got %v, want titleUpper and enrichedAt", got)
		}
	})
	t.Run("node example", func(t *testing.T) {
		before := time.Now().UnixMilli()
		a.send(map[string]any{"type": "addMaterial", "data": map[string]any{"title": "tulip"}, "to": []string{"b"}})
		got := b.read(5 * time.Second)
		d := dataOf(got)
		at, _ := d["at"].(float64)
		if got["type"] != "addMaterial" || d["titleUpper"] != "TULIP" || d["source"] != "node" || int64(at) < before {
			t.Fatalf("b got %v, want the Node plugin's enrichment", got)
		}
		a.send(map[string]any{"type": "addMaterial", "data": []int{1}, "id": "n1"})
		got = a.read(5 * time.Second)
		if got["type"] != "relay.error" || dataOf(got)["code"] != "invalid_data" {
			t.Fatalf("a got %v, want relay.error invalid_data from the Node plugin", got)
		}
	})
}
