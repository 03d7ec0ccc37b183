package core

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Message is one relayed message: what a client sent, as handlers see it and
// as the backplane carries it.
type Message struct {
	Type string          // routing key; "" for seed text that is not a typed JSON object
	Data json.RawMessage // any JSON, nil when absent
	To   []string        // envs to deliver to; nil: every other env of the token
	ID   string          // client message id, acked and (with history) deduplicated

	Token string // never serialised to clients
	// Claims are the sender's authenticated claims that relay.yaml lets
	// handlers see (auth.jwt.claims); nil without auth. Never serialised
	// to clients; not carried to other instances.
	Claims map[string]any
	From   string // sender's env
	Seq    uint64 // per token, assigned by Backplane.Publish
	TS     int64  // ms since epoch, assigned when accepted

	// seed holds the text a seed-wire client sent. Seed receivers get it back
	// byte for byte while Type and Data still are what it parsed to; a
	// handler that changes them makes the relay re-encode instead.
	seed      []byte
	seedType  string
	seedData  []byte
	seedState uint8 // seedUnparsed, seedParsed
}

const (
	seedNone uint8 = iota
	seedUnparsed
	seedParsed
)

// ClientError is a refusal the sender learns about through relay.error.
type ClientError struct {
	Code    string
	Message string
	cause   error // what only the log gets: details the sender must not see
}

func (e *ClientError) Error() string { return e.Code + ": " + e.Message }

// Cause is what only the log gets about a refusal (a handler's failure
// behind handler_failed), nil when there is none. relay test shows it.
func (e *ClientError) Cause() error { return e.cause }

func clientErr(code, format string, args ...any) *ClientError {
	return &ClientError{Code: code, Message: fmt.Sprintf(format, args...)}
}

const (
	maxTypeLen = 128
	maxIDLen   = 64
	pingType   = "relay.ping"
)

// newSeedMessage wraps a seed-wire client's text. It is parsed only if a
// route or a v1 receiver needs its type and data.
func newSeedMessage(text []byte) *Message {
	return &Message{seed: text, seedState: seedUnparsed}
}

// parseSeed derives Type and Data for routing; the pipeline calls it (via
// Resolve) while it alone holds the message.
func (m *Message) parseSeed() {
	if m.seedState != seedUnparsed {
		return
	}
	m.seedState = seedParsed
	m.Type, m.Data = parseSeedText(m.seed)
	m.seedType, m.seedData = m.Type, m.Data
}

// typeAndData returns what a v1 receiver sees of m. It parses seed text
// that no route resolved without storing the result: a published message
// may be encoded by several goroutines (replays) and must not change.
func (m *Message) typeAndData() (string, json.RawMessage) {
	if m.seedState == seedUnparsed {
		return parseSeedText(m.seed)
	}
	return m.Type, m.Data
}

// parseSeedText reads seed text: a JSON object with a string "type" (not a
// reserved relay.* one) gives that type and its "data"; any other text is
// routed with type "" and the text itself as a JSON string.
func parseSeedText(text []byte) (string, json.RawMessage) {
	var obj struct {
		Type *string         `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	trimmed := bytes.TrimSpace(text)
	// A reserved type from a seed client is not honoured: v1 receivers must
	// never mistake it for a relay system frame.
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &obj) == nil && obj.Type != nil &&
		!strings.HasPrefix(*obj.Type, "relay.") {
		return *obj.Type, obj.Data
	}
	return "", appendJSString(nil, text)
}

// seedIntact reports whether the message still is the seed text it came as.
func (m *Message) seedIntact() bool {
	switch m.seedState {
	case seedUnparsed:
		return true
	case seedParsed:
		return m.Type == m.seedType && len(m.Data) == len(m.seedData) &&
			(len(m.Data) == 0 || &m.Data[0] == &m.seedData[0])
	}
	return false
}

// Resolve makes Type and Data available for routing (seed text is parsed lazily).
func (m *Message) Resolve() { m.parseSeed() }

// appendV1 appends the v1 frame a receiver gets for m.
func (m *Message) appendV1(dst []byte) []byte {
	typ, data := m.typeAndData()
	dst = append(dst, `{"type":`...)
	dst = appendJSString(dst, []byte(typ))
	if data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	dst = append(dst, `,"from":`...)
	dst = appendJSString(dst, []byte(m.From))
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	if m.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendJSString(dst, []byte(m.ID))
	}
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, m.TS, 10)
	return append(dst, '}')
}

// appendSeed appends the frame a seed receiver gets: what the original relay
// sent, JSON.stringify of the sender's text.
func (m *Message) appendSeed(dst []byte) []byte {
	if m.seedIntact() && m.seed != nil {
		return appendJSString(dst, m.seed)
	}
	// A v1 sender's message, or one a handler changed: JSON.stringify of
	// {type, data}, as the original clients would have sent it.
	inner := make([]byte, 0, len(m.Type)+len(m.Data)+24)
	inner = append(inner, `{"type":`...)
	inner = appendJSString(inner, []byte(m.Type))
	if m.Data != nil {
		inner = append(inner, `,"data":`...)
		var compact bytes.Buffer
		if json.Compact(&compact, m.Data) == nil {
			inner = append(inner, compact.Bytes()...)
		} else {
			inner = append(inner, m.Data...)
		}
	}
	inner = append(inner, '}')
	return appendJSString(dst, inner)
}

// jsStringLen is the length of appendJSString's encoding of s.
func jsStringLen(s string) int {
	n := len(s) + 2
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
			n++
		case c < 0x20:
			n += 5
		}
	}
	return n
}

// frameSize is what limits.max_frame_bytes measures of m: the length of the
// shortest v1 frame a client could send to make m ({"type","data","to","id"}),
// or of the seed text while m still is that text. A message a client sent
// measures no more than the frame it came in, so one that passes through a
// route unchanged always meets the limit again.
func (m *Message) frameSize() int {
	if m.seed != nil && m.seedIntact() {
		return len(m.seed)
	}
	n := len(`{"type":}`) + jsStringLen(m.Type)
	if m.Data != nil {
		n += len(`,"data":`) + len(m.Data)
	}
	if m.To != nil {
		n += len(`,"to":[]`)
		for i, env := range m.To {
			n += jsStringLen(env)
			if i > 0 {
				n++ // the comma
			}
		}
	}
	if m.ID != "" {
		n += len(`,"id":`) + jsStringLen(m.ID)
	}
	return n
}

// fitsFrame reports whether m meets a frame limit, without scanning its
// strings when a cheap bound (every byte escaped as \u00xx) already does.
func (m *Message) fitsFrame(limit int) bool {
	if m.seed != nil && m.seedIntact() {
		return len(m.seed) <= limit
	}
	bound := 64 + len(m.Data) + 6*(len(m.Type)+len(m.ID))
	for _, env := range m.To {
		bound += 6*len(env) + 3
	}
	return bound <= limit || m.frameSize() <= limit
}
