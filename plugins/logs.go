package plugins

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// lineLog writes what a plugin prints, line by line, into relay's log with
// the plugin's name, and keeps the last lines for start errors.
type lineLog struct {
	log    *slog.Logger
	stream string

	mu     sync.Mutex
	buf    []byte
	tail   *tail
	budget *lineBudget // nil: every line is logged
}

const maxLine = 8 << 10 // longer lines are logged in pieces

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) >= maxLine {
				l.emit(l.buf)
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLog) emit(line []byte) {
	text := strings.TrimRight(string(line), "\r")
	if strings.TrimSpace(text) == "" {
		return
	}
	if l.budget != nil && !l.budget.allow() {
		if l.tail != nil {
			l.tail.add(text) // a start error still shows the last lines
		}
		return
	}
	level, msg, attrs := parseLine(text)
	if l.tail != nil {
		l.tail.add(msg)
	}
	l.log.Log(context.Background(), level, msg, append(attrs, slog.String("stream", l.stream))...)
}

// A plugin may print what it likes, but relay's log takes the first lines
// of a burst (a panic's stack included) and then a few a second; what is
// left out is counted in a line of its own, once a second at most.
const (
	pluginLogBurst = 200
	pluginLogRate  = 20 // lines per second after the burst
)

// lineBudget rate-limits the lines of one plugin.
type lineBudget struct {
	log *slog.Logger

	mu         sync.Mutex
	limiter    *rate.Limiter
	suppressed int
	reporting  bool // a count line is due within a second
}

func newLineBudget(log *slog.Logger) *lineBudget {
	return &lineBudget{log: log, limiter: rate.NewLimiter(pluginLogRate, pluginLogBurst)}
}

// allow reports whether a line is logged. The count of the lines left out
// is logged a second after the first of them, then each second while
// lines are still being left out.
func (b *lineBudget) allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limiter.Allow() {
		return true
	}
	b.suppressed++
	if !b.reporting {
		b.reporting = true
		time.AfterFunc(time.Second, b.flush)
	}
	return false
}

func (b *lineBudget) flush() {
	b.mu.Lock()
	n := b.suppressed
	b.suppressed, b.reporting = 0, false
	b.mu.Unlock()
	b.logSuppressed(n)
}

func (b *lineBudget) logSuppressed(n int) {
	if n > 0 {
		b.log.Warn("plugin output lines not logged", "suppressed", n)
	}
}

// parseLine reads a level from hclog's JSON lines ({"@level":"warn",
// "@message":…, other keys become attributes}), from slog's and logfmt's
// level=WARN, from [WARN] prefixes and from Go panics; anything else is
// info.
func parseLine(text string) (slog.Level, string, []any) {
	if strings.HasPrefix(text, "{") {
		var entry map[string]any
		if json.Unmarshal([]byte(text), &entry) == nil {
			if msg, ok := entry["@message"].(string); ok {
				level, _ := entry["@level"].(string)
				var attrs []any
				keys := make([]string, 0, len(entry))
				for k := range entry {
					if k != "@message" && k != "@level" && k != "@timestamp" {
						keys = append(keys, k)
					}
				}
				sort.Strings(keys)
				for _, k := range keys {
					attrs = append(attrs, slog.Any(strings.TrimPrefix(k, "@"), entry[k]))
				}
				return levelOf(level), msg, attrs
			}
		}
	}
	for _, p := range []string{"[TRACE]", "[DEBUG]", "[INFO]", "[WARN]", "[ERROR]"} {
		if strings.HasPrefix(text, p) {
			return levelOf(strings.Trim(p, "[]")), strings.TrimSpace(strings.TrimPrefix(text, p)), nil
		}
	}
	if strings.HasPrefix(text, "panic: ") || strings.HasPrefix(text, "fatal error: ") {
		return slog.LevelError, text, nil
	}
	if i := strings.Index(text, "level="); i >= 0 {
		rest := text[i+len("level="):]
		if j := strings.IndexByte(rest, ' '); j >= 0 {
			rest = rest[:j]
		}
		return levelOf(rest), text, nil
	}
	return slog.LevelInfo, text, nil
}

func levelOf(s string) slog.Level {
	switch strings.ToLower(strings.Trim(s, `"`)) {
	case "trace", "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error", "fatal", "panic":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// tail keeps the first and the last lines a plugin printed: a panic's
// first line and a fatal error's last one both make it into a start error.
type tail struct {
	mu    sync.Mutex
	first []string
	last  []string
	more  bool // lines were dropped between first and last
}

const tailFirst, tailLast = 3, 3

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(line) > 300 {
		line = line[:300] + "…"
	}
	if len(t.first) < tailFirst {
		t.first = append(t.first, line)
		return
	}
	t.last = append(t.last, line)
	if len(t.last) > tailLast {
		t.last = t.last[1:]
		t.more = true
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := append([]string{}, t.first...)
	if t.more {
		lines = append(lines, "…")
	}
	return strings.Join(append(lines, t.last...), " | ")
}
