package handlers

import (
	"context"
	"log/slog"
	"testing"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

const (
	benchData      = `{"id":42,"name":"poster.png","url":"https://cdn.example.com/p/poster.png","tags":["a","b"]}`
	benchTransform = "handler: transform\nset:\n  data.receivedAt: now()\n  data.by: from"
)

func benchMsg() *core.Message { return msg("addMaterial", benchData) }

func runBench(b *testing.B, chain ...core.Handler) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m := benchMsg()
		for _, h := range chain {
			out, err := h.Handle(ctx, m)
			if err != nil || len(out) != 1 {
				b.Fatalf("out %v, err %v", out, err)
			}
			m = out[0]
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	runBench(b, build(b, "handler: validate\nschema_file: schemas/material.json"))
}

func BenchmarkTransform(b *testing.B) {
	runBench(b, build(b, benchTransform))
}

func BenchmarkValidateTransform(b *testing.B) {
	runBench(b, build(b, "handler: validate\nschema_file: schemas/material.json"), build(b, benchTransform))
}

func BenchmarkFilter(b *testing.B) {
	runBench(b, build(b, "handler: filter\nexpr: from == 'h5' && type == 'addMaterial'"))
}

func BenchmarkFilterData(b *testing.B) {
	runBench(b, build(b, "handler: filter\nexpr: data.id > 0"))
}

func BenchmarkRateLimit(b *testing.B) {
	runBench(b, build(b, "handler: rate_limit\nrate: 1e9\nburst: 1000000"))
}

// BenchmarkShippedRoute is the whole route of the shipped relay.yaml's
// addMaterial (rate_limit, validate, transform) through the pipeline with
// its metrics, as the relay runs it, the rate raised out of the way.
func BenchmarkShippedRoute(b *testing.B) {
	cfg, err := config.Parse([]byte(`routes:
  - name: addMaterial
    match: {type: addMaterial}
    handlers:
      - {handler: rate_limit, rate: 1e9, burst: 1000000, per: token}
      - handler: validate
        schema:
          type: object
          required: [id, name]
          properties:
            id: {type: [string, integer]}
            name: {type: string, minLength: 1, maxLength: 200}
      - {handler: transform, set: {data.receivedAt: now()}}
`), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	p, err := core.BuildPipeline(context.Background(), cfg, "", slog.New(slog.DiscardHandler), core.NewMetrics())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		out, _, err := p.Process(ctx, benchMsg())
		if err != nil || len(out) != 1 {
			b.Fatalf("out %v, err %v", out, err)
		}
	}
}
