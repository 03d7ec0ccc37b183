package plugins

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestNodeSDKSpeaksTheProtocol: the Node SDK loads the protocol's one
// .proto (Go's code is generated from it) and says the handshake's
// constants as the host does.
func TestNodeSDKSpeaksTheProtocol(t *testing.T) {
	var protos []string
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == ".git") {
			return filepath.SkipDir
		}
		if d.Name() == "plugin.proto" {
			protos = append(protos, filepath.ToSlash(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"../plugins/sdk-node/proto/relayplugin/v1/plugin.proto"}; !slices.Equal(protos, want) {
		t.Errorf("copies of plugin.proto: %q, want only %q", protos, want)
	}
	js, err := os.ReadFile("sdk-node/index.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"'" + wire.MagicCookieKey + "'", "'" + wire.MagicCookieValue + "'",
		fmt.Sprintf("const APP_PROTOCOL = %d;", wire.AppProtocolVersion)} {
		if !strings.Contains(string(js), want) {
			t.Errorf("the Node SDK does not say %s", want)
		}
	}
}

// recordCounter counts log records by message and sums their suppressed counts.
type recordCounter struct {
	mu         sync.Mutex
	byMsg      map[string]int
	suppressed int
}

func (c *recordCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *recordCounter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *recordCounter) WithGroup(string) slog.Handler            { return c }
func (c *recordCounter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byMsg[r.Message]++
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			c.suppressed += int(a.Value.Int64())
		}
		return true
	})
	return nil
}

func (c *recordCounter) counts() (lines, countLines, suppressed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for msg, n := range c.byMsg {
		if msg == "plugin output lines not logged" {
			countLines += n
		} else {
			lines += n
		}
	}
	return lines, countLines, c.suppressed
}

// TestPluginOutputFloodIsRateLimited: 20,000 lines printed at once give
// the first lines of the burst and a count of the rest, which is logged
// even when the plugin prints nothing more.
func TestPluginOutputFloodIsRateLimited(t *testing.T) {
	rc := &recordCounter{byMsg: map[string]int{}}
	log := slog.New(rc)
	budget := newLineBudget(log)
	last := &tail{}
	out := &lineLog{log: log, stream: "stderr", tail: last, budget: budget}
	errOut := &lineLog{log: log, stream: "stdout", budget: budget}
	const flood = 20000
	start := time.Now()
	for i := range flood {
		w := io.Writer(out)
		if i%2 == 1 {
			w = errOut // both streams share the plugin's budget
		}
		fmt.Fprintf(w, "line %d\n", i)
	}
	elapsed := time.Since(start)
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines, countLines, suppressed := rc.counts()
		if lines+suppressed == flood {
			if most := pluginLogBurst + int(elapsed.Seconds()+1)*pluginLogRate; lines > most {
				t.Fatalf("%d of %d lines logged in %v, want at most %d", lines, flood, elapsed, most)
			}
			if countLines < 1 || countLines > int(elapsed.Seconds())+2 {
				t.Fatalf("%d count lines in %v", countLines, elapsed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logged %d lines and counted %d suppressed, want %d in all", lines, suppressed, flood)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := rc.byMsg["line 0"]; got != 1 {
		t.Fatalf("the burst's first line was not logged")
	}
	if got := last.String(); !strings.HasSuffix(got, fmt.Sprintf("line %d", flood-2)) {
		t.Fatalf("start-error tail %q does not end with the last stderr line", got)
	}
}
