package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decodeData decodes a message's data for expressions and edits: nil when
// absent; numbers become int when they are whole and fit, float64 when they
// have a fraction or exponent, and stay json.Number (exact, re-encoded as
// sent) when they are whole but too large for an int.
func decodeData(raw []byte) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("data is not valid JSON: %v", err)
	}
	return convertNumbers(v), nil
}

func convertNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			switch e.(type) {
			case map[string]any, []any, json.Number:
				x[k] = convertNumbers(e)
			}
		}
	case []any:
		for i, e := range x {
			x[i] = convertNumbers(e)
		}
	case json.Number:
		s := string(x)
		if i, err := strconv.ParseInt(s, 10, 0); err == nil {
			return int(i)
		}
		if !strings.ContainsAny(s, ".eE") {
			return x // a whole number beyond int: keep it exact
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return f
		}
		return x
	}
	return v
}

// encodeData encodes a decoded JSON value (as decodeData and expressions
// make them) compactly, with object keys sorted and without escaping <, >
// and &. Values of other Go types go through encoding/json.
func encodeData(v any) ([]byte, error) {
	b, err := appendJSON(make([]byte, 0, 256), v)
	if err != nil {
		return nil, fmt.Errorf("cannot encode data: %v", err)
	}
	return b, nil
}

func appendJSON(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return appendJSONString(b, x), nil
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case float64:
		return appendFloat(b, x)
	case json.Number:
		return append(b, x...), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendJSON(b, x[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return append(b, bytes.TrimRight(buf.Bytes(), "\n")...), nil
}

// appendFloat writes f as encoding/json does.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%v is not a JSON number", f)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // 1e-07, not 1e-007 style: drop the exponent's leading zero
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string: invalid UTF-8 becomes U+FFFD,
// control characters and U+2028/U+2029 are escaped, HTML characters are not.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\\ufffd"...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// deepCopy copies the objects and arrays of a decoded JSON value, so that an
// expression's result never aliases a part of data that is edited later.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(x))
		for k, e := range x {
			c[k] = deepCopy(e)
		}
		return c
	case []any:
		c := make([]any, len(x))
		for i, e := range x {
			c[i] = deepCopy(e)
		}
		return c
	}
	return v
}

// jsonKind names the JSON kind of a decoded value, for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any, []string:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int64, float64, json.Number, uint64:
		return "a number"
	}
	return fmt.Sprintf("a %T", v)
}

// Field paths name what transform edits: type, to, data or data.KEY.KEY….

type pathKind uint8

const (
	pathType pathKind = iota
	pathTo
	pathData
)

type fieldPath struct {
	text string
	kind pathKind
	keys []string // within data, for pathData
}

func parsePath(s string) (fieldPath, error) {
	p := fieldPath{text: s}
	switch {
	case s == "type":
		p.kind = pathType
	case s == "to":
		p.kind = pathTo
	case s == "data":
		p.kind = pathData
	case strings.HasPrefix(s, "data."):
		p.kind = pathData
		p.keys = strings.Split(s[len("data."):], ".")
		for _, k := range p.keys {
			if k == "" {
				return p, fmt.Errorf("path %q has an empty key", s)
			}
		}
	default:
		return p, fmt.Errorf("path %q is not one of type, to, data or data.KEY (keys separated by dots)", s)
	}
	return p, nil
}

// parentText is the path of the object holding keys[i] ("data", "data.a", …).
func (p fieldPath) parentText(i int) string {
	return strings.Join(append([]string{"data"}, p.keys[:i]...), ".")
}

// take removes the value at p from data and returns it; ok is false when
// there is nothing there (a missing key, or a parent that is not an object).
func (p fieldPath) take(data any) (v any, ok bool) {
	obj, ok := p.parent(data)
	if !ok {
		return nil, false
	}
	last := p.keys[len(p.keys)-1]
	v, ok = obj[last]
	if ok {
		delete(obj, last)
	}
	return v, ok
}

func (p fieldPath) parent(data any) (map[string]any, bool) {
	obj, ok := data.(map[string]any)
	for i := 0; ok && i < len(p.keys)-1; i++ {
		obj, ok = obj[p.keys[i]].(map[string]any)
	}
	return obj, ok
}

// put stores v at p in *data, creating missing (or null) objects on the
// way; a value on the way that is not an object is an error.
func (p fieldPath) put(data *any, v any) error {
	if len(p.keys) == 0 {
		*data = v
		return nil
	}
	if *data == nil {
		*data = map[string]any{}
	}
	obj, ok := (*data).(map[string]any)
	if !ok {
		return fmt.Errorf("cannot set %s: data is %s, not an object", p.text, jsonKind(*data))
	}
	for i, k := range p.keys[:len(p.keys)-1] {
		switch child := obj[k].(type) {
		case map[string]any:
			obj = child
		case nil:
			next := map[string]any{}
			obj[k] = next
			obj = next
		default:
			return fmt.Errorf("cannot set %s: %s is %s, not an object", p.text, p.parentText(i+1), jsonKind(child))
		}
	}
	obj[p.keys[len(p.keys)-1]] = v
	return nil
}
