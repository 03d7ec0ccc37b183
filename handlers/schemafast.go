package handlers

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// quickSchema checks the common subset of JSON Schema (types, properties,
// required, lengths, bounds, enums of strings) straight on a message's raw
// JSON, without decoding it into maps first, which is where the general
// validator spends most of its time. It answers only when it is certain:
// a message it cannot judge exactly (an escape in a key, a duplicate key,
// a number beyond float64's exact range) goes to the general validator,
// and so does every message it finds invalid, so that the error a client
// reads is always the general validator's.
type quickSchema struct {
	never      bool     // the false schema
	types      typeMask // 0: any type
	properties map[string]*quickSchema
	required   []string
	additional *quickSchema // nil: any additional property is allowed
	items      *quickSchema

	minLength, maxLength         int // -1: unset
	minItems, maxItems           int
	minProperties, maxProperties int

	bounds []numberBound
	enum   []any             // strings, booleans and nil; nil slice: no enum
	format func(v any) error // the compiler's check of a string format
	all    []*quickSchema    // $ref and allOf: the value must match each too
}

type typeMask uint8

const (
	typeNull typeMask = 1 << iota
	typeBoolean
	typeObject
	typeArray
	typeNumber // includes integers
	typeInteger
	typeString
)

var typeNames = map[string]typeMask{"null": typeNull, "boolean": typeBoolean, "object": typeObject,
	"array": typeArray, "number": typeNumber, "integer": typeInteger, "string": typeString}

type numberBound struct {
	limit     float64
	below     bool // the value must be below the limit (maximum), else above
	exclusive bool
}

// maxExactDigits: two decimals of at most this many significant digits
// convert to distinct float64s, in the same order, so comparing the floats
// compares the decimals exactly.
const maxExactDigits = 15

// compileQuick returns the quick form of a compiled schema, or nil when
// the schema uses anything outside the subset. Its references are already
// resolved by the compiler: a $ref is checked like an allOf entry.
func compileQuick(root *jsonschema.Schema) *quickSchema {
	return quickCompiler{}.compile(root)
}

// quickCompiler remembers what it compiled, so that a recursive schema
// (a tree whose nodes $ref the tree) compiles to a graph, not forever.
type quickCompiler map[*jsonschema.Schema]*quickSchema

func (qc quickCompiler) compile(s *jsonschema.Schema) *quickSchema {
	if q, ok := qc[s]; ok {
		return q
	}
	q := &quickSchema{}
	qc[s] = q
	if !qc.fill(q, s) {
		return nil
	}
	return q
}

func (qc quickCompiler) fill(q *quickSchema, s *jsonschema.Schema) bool {
	if s.Bool != nil {
		q.never = !*s.Bool
		q.minLength, q.maxLength, q.minItems, q.maxItems, q.minProperties, q.maxProperties = -1, -1, -1, -1, -1, -1
		return true
	}
	if s.DraftVersion != 2020 || unsupported(s) {
		return false
	}
	if s.Types != nil {
		for _, name := range s.Types.ToStrings() {
			q.types |= typeNames[name]
		}
	}
	for _, sub := range append([]*jsonschema.Schema{s.Ref}, s.AllOf...) {
		if sub == nil {
			continue
		}
		all := qc.compile(sub)
		if all == nil {
			return false
		}
		q.all = append(q.all, all)
	}
	if len(s.Properties) > 0 {
		q.properties = make(map[string]*quickSchema, len(s.Properties))
		for name, sub := range s.Properties {
			if q.properties[name] = qc.compile(sub); q.properties[name] == nil {
				return false
			}
		}
	}
	q.required = s.Required
	switch ap := s.AdditionalProperties.(type) {
	case nil:
	case bool:
		if !ap {
			q.additional = &quickSchema{never: true}
		}
	case *jsonschema.Schema:
		if q.additional = qc.compile(ap); q.additional == nil {
			return false
		}
	default:
		return false
	}
	if s.Items2020 != nil {
		if q.items = qc.compile(s.Items2020); q.items == nil {
			return false
		}
	}
	q.minLength, q.maxLength = intOr(s.MinLength), intOr(s.MaxLength)
	q.minItems, q.maxItems = intOr(s.MinItems), intOr(s.MaxItems)
	q.minProperties, q.maxProperties = intOr(s.MinProperties), intOr(s.MaxProperties)
	for _, b := range []struct {
		limit            *big.Rat
		below, exclusive bool
	}{{s.Minimum, false, false}, {s.Maximum, true, false}, {s.ExclusiveMinimum, false, true}, {s.ExclusiveMaximum, true, true}} {
		if b.limit == nil {
			continue
		}
		f, ok := shortDecimal(b.limit)
		if !ok {
			return false
		}
		q.bounds = append(q.bounds, numberBound{limit: f, below: b.below, exclusive: b.exclusive})
	}
	if s.Enum != nil {
		q.enum = append([]any{}, s.Enum.Values...)
	}
	if s.Const != nil {
		q.enum = []any{*s.Const}
	}
	for _, e := range q.enum {
		switch e.(type) {
		case string, bool, nil:
		default:
			return false
		}
	}
	if s.Format != nil {
		q.format = s.Format.Validate
	}
	return true
}

// unsupported reports keywords the quick check does not implement.
func unsupported(s *jsonschema.Schema) bool {
	return s.RecursiveRef != nil || s.RecursiveAnchor || s.DynamicRef != nil || s.Not != nil ||
		len(s.AnyOf) > 0 || len(s.OneOf) > 0 || s.If != nil || s.Then != nil || s.Else != nil ||
		s.PropertyNames != nil || len(s.PatternProperties) > 0 || len(s.Dependencies) > 0 ||
		len(s.DependentRequired) > 0 || len(s.DependentSchemas) > 0 || s.UnevaluatedProperties != nil ||
		s.UniqueItems || s.Contains != nil || s.MinContains != nil || s.MaxContains != nil ||
		s.Items != nil || s.AdditionalItems != nil || len(s.PrefixItems) > 0 || s.UnevaluatedItems != nil ||
		s.Pattern != nil || s.ContentEncoding != nil || s.ContentMediaType != nil || s.ContentSchema != nil ||
		s.MultipleOf != nil || len(s.Extensions) > 0
}

func intOr(p *int) int {
	if p == nil {
		return -1
	}
	return *p
}

// shortDecimal is r as a float64 when r is a decimal of at most
// maxExactDigits significant digits.
func shortDecimal(r *big.Rat) (float64, bool) {
	f, _ := r.Float64()
	if math.IsInf(f, 0) {
		return 0, false
	}
	text := strconv.FormatFloat(f, 'g', -1, 64)
	back, ok := new(big.Rat).SetString(text)
	if !ok || back.Cmp(r) != 0 {
		return 0, false
	}
	g, ok := exactFloat([]byte(text))
	return g, ok && g == f
}

// verdict is what the quick check concludes about a value.
type verdict uint8

const (
	valid verdict = iota
	invalid
	unsure // the general validator must decide
)

// maxQuickDepth bounds the quick check's recursion; deeper data goes to
// the general validator.
const maxQuickDepth = 64

// check judges raw, a complete JSON value (absent data is null).
func (q *quickSchema) check(raw []byte) verdict {
	if len(raw) == 0 {
		raw = []byte("null")
	}
	c := quickChecker{b: raw}
	c.ws()
	v := c.value(q, 0)
	if v == valid {
		if c.ws(); c.i != len(c.b) {
			return unsure
		}
	}
	return v
}

type quickChecker struct {
	b []byte
	i int
}

func (c *quickChecker) ws() {
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

// value checks the value at c.i against q (nil: anything goes, only skip
// it) and moves past it. On anything but valid, c.i is left undefined.
func (c *quickChecker) value(q *quickSchema, depth int) verdict {
	if q == nil || len(q.all) == 0 {
		return c.one(q, depth)
	}
	start := c.i
	if v := c.one(q, depth); v != valid {
		return v
	}
	end := c.i
	for _, also := range q.all {
		// Deeper each time, so that a cycle of references ends.
		c.i = start
		if v := c.value(also, depth+1); v != valid {
			return v
		}
	}
	c.i = end
	return valid
}

// one checks the value at c.i against q alone, without q.all.
func (c *quickChecker) one(q *quickSchema, depth int) verdict {
	if depth > maxQuickDepth || c.i >= len(c.b) {
		return unsure
	}
	if q != nil && q.never {
		return invalid
	}
	if q != nil && q.format != nil && c.b[c.i] != '"' {
		return unsure // formats are the compiler's; leave other types to it
	}
	switch ch := c.b[c.i]; {
	case ch == '{':
		if q != nil && (!q.allows(typeObject) || q.enum != nil) {
			return invalid // enums here hold no objects
		}
		return c.object(q, depth)
	case ch == '[':
		if q != nil && (!q.allows(typeArray) || q.enum != nil) {
			return invalid
		}
		return c.array(q, depth)
	case ch == '"':
		start := c.i
		if !c.skipString() {
			return unsure
		}
		if q == nil {
			return valid
		}
		return q.checkString(c.b[start:c.i])
	case ch == 't' || ch == 'f' || ch == 'n':
		lit, mask, val := "null", typeNull, any(nil)
		if ch == 't' {
			lit, mask, val = "true", typeBoolean, true
		} else if ch == 'f' {
			lit, mask, val = "false", typeBoolean, false
		}
		if !bytes.HasPrefix(c.b[c.i:], []byte(lit)) {
			return unsure
		}
		c.i += len(lit)
		if q == nil {
			return valid
		}
		if !q.allows(mask) || !q.inEnum(val) {
			return invalid
		}
		return valid
	case ch == '-' || ch >= '0' && ch <= '9':
		start := c.i
		integral, ok := c.skipNumber()
		if !ok {
			return unsure
		}
		if q == nil {
			return valid
		}
		return q.checkNumber(c.b[start:c.i], integral)
	}
	return unsure
}

func (q *quickSchema) allows(t typeMask) bool {
	return q.types == 0 || q.types&t != 0
}

func (q *quickSchema) inEnum(v any) bool {
	if q.enum == nil {
		return true
	}
	for _, e := range q.enum {
		if e == v {
			return true
		}
	}
	return false
}

func (c *quickChecker) object(q *quickSchema, depth int) verdict {
	c.i++ // {
	// Keys seen so far, to find duplicates: the general validator keeps
	// the last of them, so which one counts is not decided here.
	var seenBuf [32][]byte
	seen := seenBuf[:0]
	var requiredFound uint64
	if q != nil && len(q.required) > 64 {
		return unsure
	}
	n := 0
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
	} else {
		for {
			c.ws()
			if c.i >= len(c.b) || c.b[c.i] != '"' {
				return unsure
			}
			start := c.i
			if !c.skipString() {
				return unsure
			}
			key := c.b[start+1 : c.i-1]
			if bytes.IndexByte(key, '\\') >= 0 || len(seen) == cap(seenBuf) {
				return unsure
			}
			for _, k := range seen {
				if bytes.Equal(k, key) {
					return unsure
				}
			}
			seen = append(seen, key)
			n++
			c.ws()
			if c.i >= len(c.b) || c.b[c.i] != ':' {
				return unsure
			}
			c.i++
			c.ws()
			var sub *quickSchema
			if q != nil {
				if p, ok := q.properties[string(key)]; ok {
					sub = p
				} else if q.additional != nil {
					sub = q.additional
				}
				for i, name := range q.required {
					if name == string(key) {
						requiredFound |= 1 << i
					}
				}
			}
			if v := c.value(sub, depth+1); v != valid {
				return v
			}
			c.ws()
			if c.i >= len(c.b) {
				return unsure
			}
			if c.b[c.i] == '}' {
				c.i++
				break
			}
			if c.b[c.i] != ',' {
				return unsure
			}
			c.i++
		}
	}
	if q == nil {
		return valid
	}
	if requiredFound != 1<<len(q.required)-1 ||
		q.minProperties >= 0 && n < q.minProperties || q.maxProperties >= 0 && n > q.maxProperties {
		return invalid
	}
	return valid
}

func (c *quickChecker) array(q *quickSchema, depth int) verdict {
	c.i++ // [
	var items *quickSchema
	if q != nil {
		items = q.items
	}
	n := 0
	c.ws()
	if c.i < len(c.b) && c.b[c.i] == ']' {
		c.i++
	} else {
		for {
			c.ws()
			if v := c.value(items, depth+1); v != valid {
				return v
			}
			n++
			c.ws()
			if c.i >= len(c.b) {
				return unsure
			}
			if c.b[c.i] == ']' {
				c.i++
				break
			}
			if c.b[c.i] != ',' {
				return unsure
			}
			c.i++
		}
	}
	if q != nil && (q.minItems >= 0 && n < q.minItems || q.maxItems >= 0 && n > q.maxItems) {
		return invalid
	}
	return valid
}

// skipString moves past the string at c.i, reporting whether it is valid
// JSON (bytes that are not UTF-8 are, as for encoding/json).
func (c *quickChecker) skipString() bool {
	for i := c.i + 1; i < len(c.b); i++ {
		// Eight plain bytes at a time: most of a message's text is plain.
		for i+8 <= len(c.b) && plainJSONText(binary.LittleEndian.Uint64(c.b[i:])) {
			i += 8
		}
		if i >= len(c.b) {
			break
		}
		switch ch := c.b[i]; {
		case ch == '"':
			c.i = i + 1
			return true
		case ch < 0x20:
			return false
		case ch == '\\':
			if i++; i >= len(c.b) {
				return false
			}
			switch c.b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(c.b) {
					return false
				}
				for _, h := range c.b[i+1 : i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				i += 4
			default:
				return false
			}
		}
	}
	return false
}

// plainJSONText reports whether none of the eight bytes in v ends a JSON
// string, starts an escape or is a control character (the classic
// "has a byte less than n" bit tricks, exact for these values).
func plainJSONText(v uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(x uint64) uint64 { return (x - ones) & ^x & highs }
	below20 := (v - 0x20*ones) & ^v & highs
	return hasZero(v^('"'*ones))|hasZero(v^('\\'*ones))|below20 == 0
}

// skipNumber moves past the number at c.i, reporting whether it is written
// as an integer (no fraction, no exponent) and whether it is valid JSON.
func (c *quickChecker) skipNumber() (integral, ok bool) {
	b := c.b
	i := c.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return false, false
	}
	integral = true
	if i < len(b) && b[i] == '.' {
		integral = false
		j := skipDigits(b, i+1)
		if j == i+1 {
			return false, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		integral = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return false, false
		}
		i = j
	}
	c.i = i
	return integral, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// checkString judges a quoted JSON string (lengths count code points).
func (q *quickSchema) checkString(quoted []byte) verdict {
	if !q.allows(typeString) {
		return invalid
	}
	if q.minLength < 0 && q.maxLength < 0 && q.enum == nil && q.format == nil {
		return valid
	}
	body := quoted[1 : len(quoted)-1]
	if !utf8.Valid(body) {
		return unsure // decoding replaces such bytes, which an enum may tell
	}
	var s string
	if bytes.IndexByte(body, '\\') >= 0 {
		if json.Unmarshal(quoted, &s) != nil {
			return unsure
		}
	} else {
		s = string(body)
	}
	n := utf8.RuneCountInString(s)
	if q.minLength >= 0 && n < q.minLength || q.maxLength >= 0 && n > q.maxLength || !q.inEnum(s) ||
		q.format != nil && q.format(s) != nil {
		return invalid
	}
	return valid
}

// checkNumber judges a JSON number literal.
func (q *quickSchema) checkNumber(lit []byte, integral bool) verdict {
	if q.enum != nil {
		return invalid // enums here hold no numbers
	}
	switch {
	case q.allows(typeNumber):
	case q.types&typeInteger != 0:
		if !integral {
			return unsure // 1.0 and 1e2 are integers too
		}
	default:
		return invalid
	}
	if len(q.bounds) == 0 {
		return valid
	}
	f, ok := exactFloat(lit)
	if !ok {
		return unsure
	}
	for _, b := range q.bounds {
		switch {
		case b.below && b.exclusive && !(f < b.limit),
			b.below && !b.exclusive && !(f <= b.limit),
			!b.below && b.exclusive && !(f > b.limit),
			!b.below && !b.exclusive && !(f >= b.limit):
			return invalid
		}
	}
	return valid
}

// exactFloat parses a JSON number whose value float64 holds exactly
// enough to compare: at most maxExactDigits significant digits and a
// modest exponent.
func exactFloat(lit []byte) (float64, bool) {
	digits := 0
	leading := true
	for i, ch := range lit {
		if ch == 'e' || ch == 'E' {
			exp, err := strconv.Atoi(string(lit[i+1:]))
			if err != nil || exp > 100 || exp < -100 {
				return 0, false
			}
			break
		}
		if ch >= '0' && ch <= '9' {
			if ch != '0' || !leading {
				leading = false
				digits++
			}
		}
	}
	if digits > maxExactDigits {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	return f, err == nil && !math.IsInf(f, 0)
}
