package core

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pairrelay/relay/config"
)

// maxDepth bounds nesting in a client frame, so that a frame of brackets
// cannot make validation recurse without end.
const maxDepth = 512

// parseV1 decodes a client frame of wire v1 into m in one pass over the
// bytes, validating the whole frame as JSON on the way. It is the hot path
// of every v1 message, hence no encoding/json (which would scan the frame
// three times and match keys case-insensitively).
func parseV1(text []byte, m *Message) *ClientError {
	if !utf8.Valid(text) {
		return clientErr(ErrInvalidUTF8, "frame is not valid UTF-8")
	}
	s := scanner{b: text}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		if err := s.value(); err != nil {
			return err
		}
		if s.ws(); s.i != len(s.b) {
			return s.fail("unexpected data after the value")
		}
		return clientErr(ErrInvalidMessage, `message must be a JSON object like {"type":"…","data":…}`)
	}
	s.i++
	var typ, id []byte
	var hasType, hasID bool
	var to []string
	var toSet bool
	// A field of the wrong kind is reported only once the whole frame is
	// known to be JSON: invalid JSON is the more basic answer.
	var fieldErr *ClientError
	for first := true; ; first = false {
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == '}' && first {
			s.i++
			break
		}
		keyStart := s.i
		if err := s.str(); err != nil {
			return err
		}
		key := s.b[keyStart:s.i]
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return s.fail("expected ':' after object key")
		}
		s.i++
		s.ws()
		valStart := s.i
		if err := s.value(); err != nil {
			return err
		}
		val := s.b[valStart:s.i]
		switch string(unquoteKey(key)) {
		case "type":
			hasType, typ = val[0] == '"', val
			if !hasType && !isNull(val) && fieldErr == nil {
				fieldErr = clientErr(ErrInvalidMessage, `field "type" must be a string`)
			}
		case "data":
			m.Data = val
		case "id":
			hasID, id = val[0] == '"', val
			if !hasID && !isNull(val) && fieldErr == nil {
				fieldErr = clientErr(ErrInvalidMessage, `field "id" must be a string`)
			}
		case "to":
			toSet = true
			var err *ClientError
			if to, err = parseTo(val); err != nil && fieldErr == nil {
				fieldErr = err
			}
		}
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ',' {
			s.i++
			continue
		}
		if s.i < len(s.b) && s.b[s.i] == '}' {
			s.i++
			break
		}
		return s.fail("expected ',' or '}' in object")
	}
	s.ws()
	if s.i != len(s.b) {
		return s.fail("unexpected data after the message object")
	}
	if fieldErr != nil {
		return fieldErr
	}
	if !hasType {
		return clientErr(ErrInvalidMessage, `field "type" is required`)
	}
	m.Type = unquote(typ)
	switch {
	case m.Type == "":
		return clientErr(ErrInvalidMessage, `field "type" is required`)
	case len(m.Type) > maxTypeLen:
		return clientErr(ErrInvalidMessage, `field "type" is longer than %d bytes`, maxTypeLen)
	case strings.HasPrefix(m.Type, "relay.") && m.Type != pingType && m.Type != refreshType:
		return clientErr(ErrReservedType, `type %q is reserved: names starting with "relay." belong to the relay`, m.Type)
	}
	if hasID {
		if m.ID = unquote(id); len(m.ID) > maxIDLen {
			return clientErr(ErrInvalidMessage, `field "id" is longer than %d bytes`, maxIDLen)
		}
	}
	if toSet {
		m.To = to
	}
	// Data aliases the read buffer, which is reused: keep a copy.
	if m.Data != nil {
		m.Data = bytes.Clone(m.Data)
	}
	return nil
}

func isNull(v []byte) bool { return string(v) == "null" }

// parseTo reads the to field: null or an array of env names.
func parseTo(val []byte) ([]string, *ClientError) {
	if isNull(val) {
		return nil, nil
	}
	bad := clientErr(ErrInvalidMessage, `field "to" must be an array of env names`)
	if val[0] != '[' {
		return nil, bad
	}
	to := []string{}
	s := scanner{b: val, i: 1}
	for {
		s.ws()
		if s.b[s.i] == ']' {
			return to, nil
		}
		start := s.i
		if s.b[s.i] != '"' {
			return nil, bad
		}
		_ = s.str() // the frame was validated already
		env := unquote(s.b[start:s.i])
		if !config.ValidEnvName(env) {
			return nil, clientErr(ErrInvalidMessage, `field "to": %q is not an env name ([a-z0-9_-]{1,32})`, env)
		}
		to = append(to, env)
		s.ws()
		if s.b[s.i] == ',' {
			s.i++
		}
	}
}

// unquote decodes a validated JSON string literal.
func unquote(lit []byte) string {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner)
	}
	var out string
	_ = json.Unmarshal(lit, &out)
	return out
}

func unquoteKey(lit []byte) []byte {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	return []byte(unquote(lit))
}

// scanner validates JSON (RFC 8259) over UTF-8 that was checked already.
type scanner struct {
	b     []byte
	i     int
	depth int
}

func (s *scanner) fail(what string) *ClientError {
	return clientErr(ErrInvalidJSON, "frame is not valid JSON: %s at offset %d", what, s.i)
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value skips one JSON value, validating it.
func (s *scanner) value() *ClientError {
	if s.i >= len(s.b) {
		return s.fail("unexpected end")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.str()
	case c == '{' || c == '[':
		return s.container(c)
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return s.fail("unexpected character " + strconv.QuoteRune(rune(s.b[s.i])))
}

func (s *scanner) container(open byte) *ClientError {
	if s.depth++; s.depth > maxDepth {
		return s.fail("nested too deeply")
	}
	closer := byte(']')
	if open == '{' {
		closer = '}'
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == closer {
		s.i++
		s.depth--
		return nil
	}
	for {
		s.ws()
		if open == '{' {
			if s.i >= len(s.b) || s.b[s.i] != '"' {
				return s.fail("expected a string key")
			}
			if err := s.str(); err != nil {
				return err
			}
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				return s.fail("expected ':' after object key")
			}
			s.i++
			s.ws()
		}
		if err := s.value(); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("unexpected end")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case closer:
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("expected ',' or '" + string(closer) + "'")
		}
	}
}

func (s *scanner) str() *ClientError {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return s.fail("expected a string")
	}
	s.i++
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return nil
		case c == '\\':
			if s.i+1 >= len(s.b) {
				return s.fail("unexpected end in string escape")
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) || !isHex4(s.b[s.i+2:s.i+6]) {
					return s.fail(`invalid \u escape`)
				}
				s.i += 6
			default:
				return s.fail("invalid escape")
			}
		case c < 0x20:
			return s.fail("control character in string")
		default:
			s.i++
		}
	}
	return s.fail("unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (s *scanner) number() *ClientError {
	start := s.i
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		s.digits()
	default:
		return s.fail("invalid number")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return s.fail("invalid number")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return s.fail("invalid number")
		}
	}
	if s.i == start {
		return s.fail("invalid number")
	}
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scanner) literal(lit string) *ClientError {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.fail("invalid literal")
	}
	s.i += len(lit)
	return nil
}
