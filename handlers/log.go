package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/pairrelay/relay/core"
)

func init() {
	core.RegisterHandler(core.HandlerSpec{
		Name:    "log",
		Summary: "Logs each message that passes (never the token in clear) and passes it on.",
		New: func() core.Handler {
			return &Log{Level: "info", Fields: []string{"type", "from", "id", "size"}}
		},
	})
}

// Log writes one structured log record per message and passes it on.
type Log struct {
	Level  string   `yaml:"level" doc:"Level of the records: debug, info, warn or error." default:"info"`
	Fields []string `yaml:"fields" doc:"What each record holds, among type, from, to, id, size (bytes of data), data (its JSON, cut at 1 KiB) and token (not the token: 12 hex digits of an HMAC of it keyed with log.token_secret, as in relay's own log lines, enough to follow one pair)." default:"[type, from, id, size]"`

	level slog.Level
	log   *slog.Logger
	want  [logFieldCount]bool
}

const (
	logType = iota
	logFrom
	logTo
	logID
	logSize
	logData
	logToken
	logFieldCount
)

var logFieldNames = [logFieldCount]string{"type", "from", "to", "id", "size", "data", "token"}

const maxLoggedData = 1024

// Provision checks the level and fields and keeps the route's logger.
func (l *Log) Provision(_ context.Context, env core.ProvisionEnv) error {
	if err := l.level.UnmarshalText([]byte(l.Level)); err != nil {
		return fmt.Errorf("level: must be debug, info, warn or error, got %q", l.Level)
	}
	for i, f := range l.Fields {
		n := slices.Index(logFieldNames[:], f)
		if n < 0 {
			return fmt.Errorf("fields[%d]: %q is not one of %s", i, f, strings.Join(logFieldNames[:], ", "))
		}
		l.want[n] = true
	}
	l.log = env.Log
	if l.log == nil {
		l.log = slog.Default()
	}
	return nil
}

// Handle logs the message and passes it on.
func (l *Log) Handle(ctx context.Context, m *core.Message) ([]*core.Message, error) {
	if !l.log.Enabled(ctx, l.level) {
		return []*core.Message{m}, nil
	}
	attrs := make([]slog.Attr, 0, logFieldCount)
	for f, on := range l.want {
		if !on {
			continue
		}
		switch f {
		case logType:
			attrs = append(attrs, slog.String("type", m.Type))
		case logFrom:
			attrs = append(attrs, slog.String("from", m.From))
		case logTo:
			if m.To != nil {
				attrs = append(attrs, slog.Any("to", m.To))
			}
		case logID:
			if m.ID != "" {
				attrs = append(attrs, slog.String("id", m.ID))
			}
		case logSize:
			attrs = append(attrs, slog.Int("size", len(m.Data)))
		case logData:
			if len(m.Data) <= maxLoggedData {
				attrs = append(attrs, slog.Any("data", json.RawMessage(m.Data)))
			} else {
				attrs = append(attrs, slog.String("data", truncate(string(m.Data), maxLoggedData)))
			}
		case logToken:
			attrs = append(attrs, slog.String("token_hash", tokenHash(m.Token)))
		}
	}
	l.log.LogAttrs(ctx, l.level, "message", attrs...)
	return []*core.Message{m}, nil
}

// tokenHash names a token in logs without revealing it, as relay's own
// log lines do.
func tokenHash(token string) string { return core.TokenID(token) }

// NonBlocking: Handle only computes; the host needs no timeout for it.
func (*Log) NonBlocking() {}
