package core

import (
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
)

// Cloud Logging ties a log line to a request's trace by three special
// fields. Cloud Run's front end gives every request X-Cloud-Trace-Context:
// TRACE_ID/SPAN_ID;o=OPTIONS, with a 32-hex-digit trace id and a decimal
// span id; Cloud Logging wants the trace as projects/PROJECT/traces/TRACE_ID
// and the span id as 16 hex digits.
const (
	traceHeader     = "X-Cloud-Trace-Context"
	traceLocal      = "relay.trace"
	traceKey        = "logging.googleapis.com/trace"
	spanKey         = "logging.googleapis.com/spanId"
	traceSampledKey = "logging.googleapis.com/trace_sampled"
)

// traceRef is a session's trace context, in binary: a session without the
// header (or without log.trace_project) keeps only a nil pointer, one with
// it 32 bytes. The log fields are formatted when a line is written.
type traceRef struct {
	id      [16]byte
	span    uint64 // 0: the header named no span
	sampled bool
}

// parseCloudTrace reads an X-Cloud-Trace-Context value; nil when it has
// no valid trace id. A span id that is not a decimal number is left out.
func parseCloudTrace(v string) *traceRef {
	if v == "" {
		return nil
	}
	head, opts, _ := strings.Cut(v, ";")
	id, span, _ := strings.Cut(head, "/")
	var t traceRef
	if len(id) != 32 {
		return nil
	}
	if _, err := hex.Decode(t.id[:], []byte(id)); err != nil || t.id == [16]byte{} {
		return nil
	}
	if n, err := strconv.ParseUint(span, 10, 64); err == nil {
		t.span = n
	}
	t.sampled = strings.TrimSpace(opts) == "o=1"
	return &t
}

// attrs are the Cloud Logging fields of t for project.
func (t *traceRef) attrs(project string) []any {
	attrs := []any{traceKey, "projects/" + project + "/traces/" + hex.EncodeToString(t.id[:])}
	if t.span != 0 {
		var b [16]byte
		s := strconv.AppendUint(b[:0], t.span, 16)
		attrs = append(attrs, spanKey, strings.Repeat("0", 16-len(s))+string(s))
	}
	return append(attrs, traceSampledKey, t.sampled)
}

// log is the logger for lines about s: with the trace fields of its
// upgrade request when it had them.
func (s *Session) log() *slog.Logger {
	if s.trace == nil {
		return s.hub.log
	}
	return s.hub.log.With(s.trace.attrs(s.hub.cfg.Log.TraceProject)...)
}
