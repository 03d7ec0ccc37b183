package core

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pairrelay/relay/config"
)

// Message is one relayed message: what a client sent, as handlers see it and
// as the backplane carries it.
type Message struct {
	Type string          // routing key; "" for seed text that is not a typed JSON object
	Data json.RawMessage // any JSON, nil when absent
	To   []string        // envs to deliver to; nil: every other env of the token
	ID   string          // client message id, acked and (with history) deduplicated

	Token string // never serialised to clients
	From  string // sender's env
	Seq   uint64 // per token, assigned by Backplane.Publish
	TS    int64  // ms since epoch, assigned when accepted

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
}

func (e *ClientError) Error() string { return e.Code + ": " + e.Message }

func clientErr(code, format string, args ...any) *ClientError {
	return &ClientError{Code: code, Message: fmt.Sprintf(format, args...)}
}

const (
	maxTypeLen = 128
	maxIDLen   = 64
	pingType   = "relay.ping"
)

// parseV1 decodes a client frame of wire v1 into m.
func parseV1(text []byte, m *Message) *ClientError {
	if !utf8.Valid(text) {
		return clientErr(ErrInvalidUTF8, "frame is not valid UTF-8")
	}
	var env struct {
		Type *string         `json:"type"`
		Data json.RawMessage `json:"data"`
		To   []string        `json:"to"`
		ID   *string         `json:"id"`
	}
	if err := json.Unmarshal(text, &env); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			if typeErr.Field == "" {
				return clientErr(ErrInvalidMessage, "message must be a JSON object like {\"type\":\"…\",\"data\":…}")
			}
			return clientErr(ErrInvalidMessage, "field %q must be %s", typeErr.Field, jsonKind(typeErr.Field))
		}
		return clientErr(ErrInvalidJSON, "frame is not valid JSON: %s", err.Error())
	}
	if env.Type == nil || *env.Type == "" {
		return clientErr(ErrInvalidMessage, "field \"type\" is required")
	}
	if len(*env.Type) > maxTypeLen {
		return clientErr(ErrInvalidMessage, "field \"type\" is longer than %d bytes", maxTypeLen)
	}
	if strings.HasPrefix(*env.Type, "relay.") && *env.Type != pingType {
		return clientErr(ErrReservedType, "type %q is reserved: names starting with \"relay.\" belong to the relay", *env.Type)
	}
	if env.ID != nil && len(*env.ID) > maxIDLen {
		return clientErr(ErrInvalidMessage, "field \"id\" is longer than %d bytes", maxIDLen)
	}
	for _, to := range env.To {
		if !config.ValidEnvName(to) {
			return clientErr(ErrInvalidMessage, "field \"to\": %q is not an env name ([a-z0-9_-]{1,32})", to)
		}
	}
	m.Type = *env.Type
	m.Data = env.Data
	m.To = env.To
	if env.ID != nil {
		m.ID = *env.ID
	}
	return nil
}

func jsonKind(field string) string {
	switch field {
	case "to":
		return "an array of env names"
	default:
		return "a string"
	}
}

// newSeedMessage wraps a seed-wire client's text. It is parsed only if a
// route or a v1 receiver needs its type and data.
func newSeedMessage(text []byte) *Message {
	return &Message{seed: text, seedState: seedUnparsed}
}

// parseSeed derives Type and Data from the seed text: a JSON object with a
// string "type" (not a reserved relay.* one) gives that type and its "data";
// any other text is routed with type "" and the text itself as a JSON string.
func (m *Message) parseSeed() {
	if m.seedState != seedUnparsed {
		return
	}
	m.seedState = seedParsed
	var obj struct {
		Type *string         `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	trimmed := bytes.TrimSpace(m.seed)
	// A reserved type from a seed client is not honoured: v1 receivers must
	// never mistake it for a relay system frame.
	if len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &obj) == nil && obj.Type != nil &&
		!strings.HasPrefix(*obj.Type, "relay.") {
		m.Type, m.Data = *obj.Type, obj.Data
	} else {
		m.Type, m.Data = "", appendJSString(nil, m.seed)
	}
	m.seedType, m.seedData = m.Type, m.Data
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
	m.parseSeed()
	dst = append(dst, `{"type":`...)
	dst = appendJSString(dst, []byte(m.Type))
	if m.Data != nil {
		dst = append(dst, `,"data":`...)
		dst = append(dst, m.Data...)
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
