package handlers

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// TestInAPipeline runs the handlers the way the relay does: a relay.yaml
// with routes, BuildPipeline, Process.
func TestInAPipeline(t *testing.T) {
	src := `
routes:
  - name: materials
    match: {type: addMaterial}
    handlers:
      - handler: validate
        schema_file: schemas/material.json
      - handler: filter
        expr: from != 'blocked'
      - handler: transform
        set:
          type: "'material.added'"
          data.by: from
      - handler: log
  - match: {type: spam}
    handlers:
      - handler: drop
`
	cfg, err := config.Parse([]byte(src), filepath.Join("testdata", "relay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := core.BuildPipeline(context.Background(), cfg, filepath.Join("testdata", "relay.yaml"), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	out, route, err := p.Process(context.Background(), msg("addMaterial", `{"id":1,"name":"a"}`))
	if err != nil || len(out) != 1 || route != "materials" {
		t.Fatalf("out %v, route %q, err %v", out, route, err)
	}
	if out[0].Type != "material.added" || !jsonEqual(t, out[0].Data, `{"id":1,"name":"a","by":"h5"}`) {
		t.Errorf("got %s %s", out[0].Type, out[0].Data)
	}

	_, _, err = p.Process(context.Background(), msg("addMaterial", `{"id":1}`))
	if rejectCode(err) != core.ErrInvalidMessage {
		t.Errorf("invalid message: err %v", err)
	}
	blocked := msg("addMaterial", `{"id":1,"name":"a"}`)
	blocked.From = "blocked"
	if out, _, err := p.Process(context.Background(), blocked); err != nil || len(out) != 0 {
		t.Errorf("filtered: out %v err %v", out, err)
	}
	if out, _, err := p.Process(context.Background(), msg("spam", `1`)); err != nil || len(out) != 0 {
		t.Errorf("dropped: out %v err %v", out, err)
	}
}
