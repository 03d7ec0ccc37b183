package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/pairrelay/relay/core"
)

func TestDrop(t *testing.T) {
	h := build(t, "handler: drop")
	out, err := h.Handle(context.Background(), msg("x", `{}`))
	if got := outcome(out, err); got != "drop" {
		t.Fatalf("outcome = %s, want drop", got)
	}
}

func TestEveryHandlerIsRegisteredWithDocs(t *testing.T) {
	for _, name := range []string{"validate", "transform", "filter", "rate_limit", "webhook", "log", "drop"} {
		spec, ok := core.LookupHandler(name)
		if !ok {
			t.Errorf("%s is not registered", name)
			continue
		}
		if spec.Summary == "" {
			t.Errorf("%s has no summary", name)
		}
		h := spec.New()
		missing := undocumented(h)
		for _, f := range missing {
			t.Errorf("%s: setting %s has no doc tag", name, f)
		}
	}
}

func logLines(t *testing.T, config string, m *core.Message) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	h, err := tryBuild(config, slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	out, err := h.Handle(context.Background(), m)
	if got := outcome(out, err); got != "pass" || out[0] != m {
		t.Fatalf("log did not pass the message on: %s %v", got, err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, rec)
	}
	return lines
}

func TestLogDefaults(t *testing.T) {
	m := msg("addMaterial", `{"name":"a"}`)
	m.Token = "secret-token-123"
	lines := logLines(t, "handler: log", m)
	if len(lines) != 1 {
		t.Fatalf("got %d records, want 1", len(lines))
	}
	rec := lines[0]
	if rec["level"] != "INFO" || rec["type"] != "addMaterial" || rec["from"] != "h5" || rec["id"] != "c-1" || rec["size"] != 12.0 {
		t.Errorf("record = %v", rec)
	}
	if _, ok := rec["data"]; ok {
		t.Errorf("data logged by default: %v", rec)
	}
}

func TestLogFieldsNeverTheToken(t *testing.T) {
	m := msg("addMaterial", `{"name":"a"}`)
	m.Token = "secret-token-123"
	m.To = []string{"miniapp"}
	var raw bytes.Buffer
	h, err := tryBuild("handler: log\nlevel: warn\nfields: [type, to, data, token]", slog.New(slog.NewTextHandler(&raw, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(raw.String(), "secret-token") {
		t.Fatalf("token logged in clear: %s", raw.String())
	}
	lines := logLines(t, "handler: log\nlevel: warn\nfields: [type, to, data, token]", m)
	rec := lines[0]
	if rec["level"] != "WARN" || rec["token_hash"] != tokenHash("secret-token-123") || len(rec["token_hash"].(string)) != 12 {
		t.Errorf("record = %v", rec)
	}
	if d, _ := rec["data"].(map[string]any); d["name"] != "a" {
		t.Errorf("data = %v, want the message's JSON", rec["data"])
	}
	if _, ok := rec["from"]; ok {
		t.Errorf("from logged though not asked for: %v", rec)
	}
}

func TestLogBelowLevelIsQuiet(t *testing.T) {
	var buf bytes.Buffer
	h, err := tryBuild("handler: log\nlevel: debug", slog.New(slog.NewTextHandler(&buf, nil))) // handler at info
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Handle(context.Background(), msg("x", "")); err != nil || buf.Len() != 0 {
		t.Fatalf("err %v, logged %q", err, buf.String())
	}
}

func TestLogLongDataIsCut(t *testing.T) {
	long := `"` + strings.Repeat("x", 3000) + `"`
	rec := logLines(t, "handler: log\nfields: [data]", msg("x", long))[0]
	if s, _ := rec["data"].(string); len(s) > maxLoggedData+8 || !strings.HasSuffix(s, "…") {
		t.Errorf("data logged as %d bytes", len(s))
	}
}

// Handlers that only compute say so, and the one that waits on a network
// (webhook) does not, so that it keeps its timeout.
func TestNonBlockingHandlers(t *testing.T) {
	for _, spec := range core.HandlerSpecs() {
		_, nonBlocking := spec.New().(core.NonBlocking)
		if want := spec.Name != "webhook"; nonBlocking != want {
			t.Errorf("%s: NonBlocking = %v, want %v", spec.Name, nonBlocking, want)
		}
	}
}
