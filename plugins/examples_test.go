package plugins

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pairrelay/relay/core"
)

// TestExampleConfigs builds the examples' relay.yaml snippets as they are
// shipped and sends an addMaterial message through each.
func TestExampleConfigs(t *testing.T) {
	// The Go example's snippet runs ./enricher next to it.
	dir := t.TempDir()
	snippet, err := os.ReadFile("examples/enricher/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	goConfig := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(goConfig, snippet, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin.enricher, filepath.Join(dir, "enricher")); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"enricher": goConfig, "node-enricher": "examples/node-enricher/relay.yaml"} {
		t.Run(name, func(t *testing.T) {
			p, err := buildPipelineAt(t, path)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			out, _, err := p.Process(ctx, &core.Message{Type: "addMaterial", Data: json.RawMessage(`{"title":"lily"}`), From: "h5"})
			if err != nil || len(out) != 1 {
				t.Fatalf("Process = %v, %v", out, err)
			}
			var data map[string]any
			if err := json.Unmarshal(out[0].Data, &data); err != nil || data["titleUpper"] != "LILY" || data["enrichedAt"] == nil {
				t.Fatalf("data %s: %v", out[0].Data, err)
			}
		})
	}
}
