package core

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
)

// testStep is a handler kind for pipeline tests: it does what its mode says.
type testStep struct {
	Mode  string `yaml:"mode" doc:"pass, fail, hang, reject, drop, fanout, retype, big, grow, fanbig or rejectbig."`
	Bytes int    `yaml:"bytes" doc:"Size of the data big, grow and fanbig make: a JSON string of this many bytes, quotes included."`
}

// bigData is a JSON string of n bytes, quotes included.
func bigData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'x'
	}
	b[0], b[n-1] = '"', '"'
	return b
}

func (h *testStep) Handle(ctx context.Context, m *Message) ([]*Message, error) {
	switch h.Mode {
	case "fail":
		return nil, errors.New("backend 10.0.0.7:9000 refused")
	case "hang":
		<-ctx.Done()
		return nil, ctx.Err()
	case "reject":
		return nil, Reject("no_thanks", "rejected on purpose")
	case "drop":
		return nil, nil
	case "fanout":
		twin := *m
		return []*Message{m, &twin}, nil
	case "retype":
		m.Type = "retyped"
	case "big": // a new message, the input left as it was
		c := *m
		c.Data = bigData(h.Bytes)
		return []*Message{&c}, nil
	case "grow": // the input itself changed
		m.Data = bigData(h.Bytes)
	case "fanbig":
		c := *m
		c.Data = bigData(h.Bytes)
		return []*Message{m, &c}, nil
	case "rejectbig":
		return nil, Reject(string(bigData(200)), "%s", bigData(h.Bytes))
	}
	return []*Message{m}, nil
}

func init() {
	RegisterHandler(HandlerSpec{Name: "test-step", Summary: "test only", New: func() Handler { return &testStep{} }})
}

func pipelineFrom(t *testing.T, yaml string) *Pipeline {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := BuildPipeline(context.Background(), cfg, "", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestPipelineRouting(t *testing.T) {
	p := pipelineFrom(t, `
unmatched: reject
routes:
  - name: only-h5
    match: {type: "material.*", from: [h5]}
    to: [miniapp, pc]
    handlers: [{handler: test-step, mode: retype}]
  - name: any-material
    match: {type: "material.*"}
    handlers: [{handler: test-step, mode: drop}]
  - match: {type: fan}
    handlers: [{handler: test-step, mode: fanout}]
`)
	cases := []struct {
		name, typ, from string
		to              []string
		wantRoute       string
		wantOut         int
		wantType        string
		wantTo          []string
		wantCode        string
	}{
		{"first match wins", "material.add", "h5", nil, "only-h5", 1, "retyped", []string{"miniapp", "pc"}, ""},
		{"message to narrows route to", "material.add", "h5", []string{"pc", "tv"}, "only-h5", 1, "retyped", []string{"pc"}, ""},
		{"from filter", "material.add", "miniapp", nil, "any-material", 0, "", nil, ""},
		{"unnamed route takes its pattern", "fan", "h5", nil, "fan", 2, "fan", nil, ""},
		{"unmatched reject", "other", "h5", nil, "", 0, "", nil, ErrUnknownType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, route, err := p.Process(context.Background(), &Message{Type: tc.typ, From: tc.from, To: tc.to})
			if tc.wantCode != "" {
				var cerr *ClientError
				if !errors.As(err, &cerr) || cerr.Code != tc.wantCode {
					t.Fatalf("err = %v, want code %s", err, tc.wantCode)
				}
				return
			}
			if err != nil || route != tc.wantRoute || len(out) != tc.wantOut {
				t.Fatalf("got %d messages via %q (%v), want %d via %q", len(out), route, err, tc.wantOut, tc.wantRoute)
			}
			if len(out) > 0 && (out[0].Type != tc.wantType || !slices.Equal(out[0].To, tc.wantTo)) {
				t.Fatalf("out = %+v", out[0])
			}
		})
	}
}

func TestPipelineOnErrorAndTimeout(t *testing.T) {
	for _, tc := range []struct {
		onError, mode string
		wantOut       int
		wantCode      string
	}{
		{"reject", "fail", 0, ErrHandlerFailed},
		{"pass", "fail", 1, ""},
		{"drop", "fail", 0, ""},
		{"pass", "hang", 1, ""},
		{"reject", "hang", 0, ErrHandlerFailed},
		// A deliberate reject is not a failure: on_error does not apply.
		{"pass", "reject", 0, "no_thanks"},
	} {
		t.Run(tc.onError+"/"+tc.mode, func(t *testing.T) {
			p := pipelineFrom(t, `
routes:
  - match: {type: x}
    on_error: `+tc.onError+`
    timeout: 50ms
    handlers: [{handler: test-step, mode: `+tc.mode+`}]
`)
			start := time.Now()
			out, _, err := p.Process(context.Background(), &Message{Type: "x"})
			if tc.mode == "hang" && time.Since(start) > 2*time.Second {
				t.Fatalf("a hanging handler held the message for %v", time.Since(start))
			}
			var cerr *ClientError
			switch {
			case tc.wantCode == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tc.wantCode != "" && (!errors.As(err, &cerr) || cerr.Code != tc.wantCode):
				t.Fatalf("err = %v, want %s", err, tc.wantCode)
			case len(out) != tc.wantOut:
				t.Fatalf("%d messages out, want %d", len(out), tc.wantOut)
			}
			if cerr != nil && cerr.Code == ErrHandlerFailed && (cerr.cause == nil || containsAny(cerr.Message, "10.0.0.7", "deadline")) {
				t.Fatalf("failure detail must reach the log only: message %q, cause %v", cerr.Message, cerr.cause)
			}
		})
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if len(sub) > 0 && len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0) {
			return true
		}
	}
	return false
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func TestBuildPipelineReportsEveryBrokenHandler(t *testing.T) {
	cfg, err := config.Parse([]byte(`
routes:
  - match: {type: a}
    handlers:
      - handler: nosuch
  - match: {type: b}
    handlers:
      - handler: test-step
        mood: happy
`), "relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = BuildPipeline(context.Background(), cfg, "", slog.New(slog.DiscardHandler), nil)
	if err == nil {
		t.Fatal("broken handlers were accepted")
	}
	for _, want := range []string{
		`relay.yaml:5: routes[0].handlers[0] (nosuch): unknown handler "nosuch"`,
		`relay.yaml:9: routes[1].handlers[0].mood: unknown key for handler test-step (known: bytes, mode)`,
	} {
		if indexOf(err.Error(), want) < 0 {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// BenchmarkPipeline measures what routing costs one message: no routes at
// all, an unmatched type among routes, and a route with one pass-through
// handler (the host's timeout, metrics and timing around it).
func BenchmarkPipeline(b *testing.B) {
	for _, tc := range []struct{ name, yaml, typ string }{
		{"no-routes", "", "x"},
		{"unmatched", "routes: [{match: {type: other}, handlers: [{handler: test-step, mode: pass}]}]", "x"},
		{"one-handler", "routes: [{match: {type: x}, handlers: [{handler: test-step, mode: pass}]}]", "x"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cfg, err := config.Parse([]byte(tc.yaml), "bench.yaml")
			if err != nil {
				b.Fatal(err)
			}
			p, err := BuildPipeline(context.Background(), cfg, "", slog.New(slog.DiscardHandler), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			m := &Message{Type: tc.typ, From: "h5", Data: []byte(`{"id":1,"name":"a"}`)}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := p.Process(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
