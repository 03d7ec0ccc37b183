package plugins

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/pairrelay/relay/plugins/internal/wire"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		line  string
		level slog.Level
		msg   string
		attrs int
	}{
		{`{"@level":"error","@message":"panic in Handle: x","@timestamp":"t","stack":"goroutine 1"}`, slog.LevelError, "panic in Handle: x", 1},
		{`{"@level":"warn","@message":"careful","@module":"plugin"}`, slog.LevelWarn, "careful", 1},
		{`[DEBUG] detail`, slog.LevelDebug, "detail", 0},
		{`time=x level=WARN msg=hi`, slog.LevelWarn, "time=x level=WARN msg=hi", 0},
		{`panic: boom`, slog.LevelError, "panic: boom", 0},
		{`{"not":"hclog"}`, slog.LevelInfo, `{"not":"hclog"}`, 0},
		{`plain words`, slog.LevelInfo, "plain words", 0},
	} {
		level, msg, attrs := parseLine(tc.line)
		if level != tc.level || msg != tc.msg || len(attrs) != tc.attrs {
			t.Errorf("parseLine(%q) = %v, %q, %v", tc.line, level, msg, attrs)
		}
	}
}

func TestTailKeepsFirstAndLastLines(t *testing.T) {
	var tl tail
	for _, l := range []string{"panic: boom", "", "goroutine 1", "a", "b", "c", "d"} {
		tl.add(l)
	}
	if got := tl.String(); got != "panic: boom |  | goroutine 1 | … | b | c | d" {
		t.Fatalf("tail = %q", got)
	}
}

// TestNodeExampleSpeaksTheProtocol: the Node example loads its own copy of
// plugin.proto (so that it can be copied out alone); make -C plugins proto
// refreshes it, and this test keeps it from drifting.
func TestNodeExampleSpeaksTheProtocol(t *testing.T) {
	want, err := os.ReadFile("internal/proto/relayplugin/v1/plugin.proto")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("examples/node-enricher/proto/relayplugin/v1/plugin.proto")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("examples/node-enricher/proto/relayplugin/v1/plugin.proto differs from the protocol: run make -C plugins proto")
	}
	js, err := os.ReadFile("examples/node-enricher/index.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"'" + wire.MagicCookieKey + "'", "'" + wire.MagicCookieValue + "'",
		fmt.Sprintf("const APP_PROTOCOL = %d;", wire.AppProtocolVersion)} {
		if !strings.Contains(string(js), want) {
			t.Errorf("the Node example does not say %s", want)
		}
	}
}
