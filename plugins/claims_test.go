package plugins

import (
	"context"
	"testing"
	"time"

	"github.com/pairrelay/relay/core"
)

// A plugin sees the sender's auth claims, and they stay with the message
// whatever the plugin answers.
func TestPluginSeesClaims(t *testing.T) {
	p, _, err := buildPipeline(t, `
plugins: [{name: tp, command: TESTPLUGIN}]
routes:
  - match: {type: "*"}
    handlers: [{handler: plugin, plugin: tp}]
`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	claims := map[string]any{"role": "editor", "openid": "o-1"}
	out, _, err := p.Process(ctx, &core.Message{Type: "claims", From: "h5", Claims: claims})
	if err != nil || len(out) != 1 {
		t.Fatalf("%v %v", out, err)
	}
	if got := string(out[0].Data); got != `{"claims":{"openid":"o-1","role":"editor"}}` {
		t.Fatalf("the plugin saw %s", got)
	}
	if out[0].Claims["role"] != "editor" {
		t.Fatalf("claims after the plugin: %v", out[0].Claims)
	}
	out, _, err = p.Process(ctx, &core.Message{Type: "claims", From: "h5"})
	if err != nil || string(out[0].Data) != `{"claims":null}` {
		t.Fatalf("without auth the plugin saw %s (%v)", out[0].Data, err)
	}
}
