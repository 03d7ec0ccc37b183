package core

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
)

// lockedBuffer is a log destination several goroutines write to.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) entries(t *testing.T) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// TestRefusalFloodLogsAFewLinesAndCountsTheRest: every bad frame is
// answered, but only the first of a burst are logged; the count of the
// others is logged with the next line and when the session ends.
func TestRefusalFloodLogsAFewLinesAndCountsTheRest(t *testing.T) {
	var logBuf lockedBuffer
	r := startRelayLog(t, slog.New(slog.NewJSONHandler(&logBuf, nil)), func(c *config.Config) { c.Limits.MessagesPerSecond = 0 })
	r.t = t
	c, _ := r.v1("noisy", "h5")
	const flood = 2000
	start := time.Now()
	for range flood / 100 {
		for range 100 {
			c.send(`not json`)
		}
		for range 100 { // within the send queue
			c.readType("relay.error")
		}
	}
	elapsed := time.Since(start)
	_ = c.conn.Close()
	var logged, counted int
	eventually(t, "the session's end to be logged", func() bool {
		logged, counted = 0, 0
		for _, e := range logBuf.entries(t) {
			switch e["msg"] {
			case "message refused":
				logged++
				if n, ok := e["suppressed"].(float64); ok {
					counted += int(n)
				}
			case "message refusals not logged":
				counted += int(e["suppressed"].(float64))
			}
		}
		return logged+counted == flood
	})
	if most := refusalLogBurst + int(elapsed.Seconds()+1)*refusalLogRate; logged > most {
		t.Fatalf("%d refusals logged in %v, want at most %d", logged, elapsed, most)
	}
	t.Logf("%d refusals: %d logged, %d counted", flood, logged, counted)
}
