package handlers

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// quickSchemas are inside the quick subset; each must compile to a quick
// form, and every quick verdict must agree with the general validator.
var quickSchemas = []string{
	`true`,
	`false`,
	`{}`,
	`{"type":"object","required":["id","name"],"properties":{"id":{"type":["string","integer"]},"name":{"type":"string","minLength":1,"maxLength":5}}}`,
	`{"type":"object","properties":{"a":{"type":"integer","minimum":1,"maximum":10}},"additionalProperties":false}`,
	`{"type":"object","additionalProperties":{"type":"string"},"minProperties":1,"maxProperties":2}`,
	`{"type":"array","items":{"type":"number","exclusiveMinimum":0.1,"exclusiveMaximum":2.5},"minItems":1,"maxItems":3}`,
	`{"enum":["a","b",true,null]}`,
	`{"const":"x"}`,
	`{"type":"string","format":"email"}`,
	`{"properties":{"u":{"$ref":"#/$defs/url"},"d":{"type":"string","format":"date-time"}},"$defs":{"url":{"type":"string","format":"uri"}}}`,
	`{"$schema":"https://json-schema.org/draft/2020-12/schema","title":"t","description":"d","allOf":[{"required":["a"]},{"properties":{"a":{"type":"boolean"}}}]}`,
	`{"$defs":{"node":{"type":"object","properties":{"v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/node"}}},"required":["v"]}},"$ref":"#/$defs/node"}`,
	`{"type":"number","minimum":-1e3,"maximum":123456789012345}`,
	`{"type":["null","boolean"]}`,
	`{"properties":{"a":false,"é":{"type":"string","maxLength":2}}}`,
}

// quickInstances mix valid and invalid data, and data the quick check must
// leave to the general validator (escapes in keys, duplicate keys, numbers
// past float64's exact range, invalid JSON).
var quickInstances = []string{
	``, `null`, `true`, `false`, `0`, `-0`, `1`, `10`, `11`, `1.0`, `1e2`, `0.1`, `0.10000000000000001`, `2.5`, `-1000`, `-1000.5`,
	`123456789012345`, `123456789012346`, `1234567890123456789012`, `1e400`, `"x"`, `"é"`, `"ab"`, `"abcdef"`, `"a\"b"`, `"\u00e9\u00e9"`,
	`"\ud83d\ude00"`, `"a@b.example"`, `"nope"`, `"http://x.example/p"`, `"::"`, `"2026-11-26T01:00:00Z"`, `[]`, `[1]`, `[0.2,2]`, `[1,2,3,4]`,
	`{}`, `{"a":1}`, `{"a":0}`, `{"a":"x"}`, `{"a":true}`, `{"a":1,"b":"x"}`, `{"a":1,"a":"x"}`, `{"a\u0062":1}`, `{"id":1,"name":"n"}`,
	`{"id":"1","name":""}`, `{"id":1.5,"name":"n"}`, `{"id":1,"name":"toolong"}`, `{"id":1}`, `{"b":"x","c":"y","d":"z"}`,
	`{"u":"http://a.example/","d":"2026-11-26T01:00:00Z"}`, `{"u":"not a uri","d":"x"}`, `{"u":1}`, `{"é":"ab"}`, `{"é":"abc"}`,
	`{"v":1,"kids":[{"v":2,"kids":[]},{"v":3}]}`, `{"v":1,"kids":[{"kids":[]}]}`, `{"v":1,"kids":[{"v":"x"}]}`,
	` {"a" : 1 } `, `{"a":1,}`, `[1,]`, `1-2`, `01`, `tru`, `nul`, `"\x"`, `"unterminated`, `{"a":1}x`, `{"a"}`, "\"a\tb\"",
	`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
}

func compileTestSchema(t testing.TB, doc string) *jsonschema.Schema {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("schema %s: %v", doc, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource("mem:schema.json", v); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("mem:schema.json")
	if err != nil {
		t.Fatalf("schema %s: %v", doc, err)
	}
	return sch
}

// agree checks one quick verdict against the general validator: valid
// must be right, always. invalid sends the message to the validator, so it
// needs to be right only for data that the validator reads as the quick
// check does: JSON without repeated keys (the quick check stops at the
// first problem it sees, before it could know).
func agree(t testing.TB, schemaDoc string, sch *jsonschema.Schema, q *quickSchema, inst []byte) verdict {
	t.Helper()
	got := q.check(inst)
	if got == unsure {
		return got
	}
	data := any(nil)
	if len(inst) > 0 {
		var err error
		if data, err = jsonschema.UnmarshalJSON(bytes.NewReader(inst)); err != nil {
			if got == valid {
				t.Fatalf("schema %s, data %q: the quick check says valid, but the data is not JSON (%v)", schemaDoc, inst, err)
			}
			return got
		}
	}
	libErr := sch.Validate(data)
	switch {
	case got == valid && libErr != nil:
		t.Fatalf("schema %s, data %q: the quick check says valid, the validator says %v", schemaDoc, inst, libErr)
	case got == invalid && libErr == nil && !repeatsKeys(inst):
		t.Fatalf("schema %s, data %q: the quick check says invalid, the validator says valid", schemaDoc, inst)
	}
	return got
}

// repeatsKeys reports whether some object in the JSON text has a key twice.
func repeatsKeys(text []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(text))
	var walk func() bool
	walk = func() bool {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		switch tok {
		case json.Delim('{'):
			keys := map[string]bool{}
			for dec.More() {
				k, _ := dec.Token()
				key, _ := k.(string)
				if keys[key] {
					return true
				}
				keys[key] = true
				if walk() {
					return true
				}
			}
			_, _ = dec.Token()
		case json.Delim('['):
			for dec.More() {
				if walk() {
					return true
				}
			}
			_, _ = dec.Token()
		}
		return false
	}
	return walk()
}

func (v verdict) String() string {
	return [...]string{"valid", "invalid", "unsure"}[v]
}

func TestQuickSchemaAgreesWithValidator(t *testing.T) {
	var sure, jsonInstances int
	for _, doc := range quickSchemas {
		sch := compileTestSchema(t, doc)
		q := compileQuick(sch)
		if q == nil {
			t.Fatalf("schema %s has no quick form", doc)
		}
		for _, inst := range quickInstances {
			v := agree(t, doc, sch, q, []byte(inst))
			if _, err := jsonschema.UnmarshalJSON(strings.NewReader(inst)); err == nil || inst == "" {
				jsonInstances++
				if v != unsure {
					sure++
				}
			}
		}
	}
	// The point of the quick check is to decide most messages itself.
	if sure*10 < jsonInstances*8 {
		t.Fatalf("the quick check decided only %d of %d valid-JSON cases", sure, jsonInstances)
	}
}

func TestQuickSchemaLeavesUnknownKeywords(t *testing.T) {
	for _, doc := range []string{
		`{"type":"string","pattern":"^a"}`,
		`{"anyOf":[{"type":"string"},{"type":"integer"}]}`,
		`{"oneOf":[{"type":"string"}]}`,
		`{"not":{"type":"string"}}`,
		`{"multipleOf":2}`,
		`{"enum":[1,2]}`,
		`{"const":{"a":1}}`,
		`{"uniqueItems":true}`,
		`{"prefixItems":[{"type":"string"}]}`,
		`{"patternProperties":{"^a":{"type":"string"}}}`,
		`{"unevaluatedProperties":false}`,
		`{"if":{"type":"string"},"then":{"minLength":1}}`,
		`{"dependentRequired":{"a":["b"]}}`,
		`{"properties":{"a":{"type":"string","pattern":"x"}}}`,
		`{"maximum":0.1234567890123456789}`,
		`{"$schema":"http://json-schema.org/draft-07/schema#","type":"string"}`,
	} {
		if q := compileQuick(compileTestSchema(t, doc)); q != nil {
			t.Errorf("schema %s compiled to a quick form; it uses keywords the quick check does not implement", doc)
		}
	}
}

func FuzzQuickSchemaAgreesWithValidator(f *testing.F) {
	for _, inst := range quickInstances {
		f.Add([]byte(inst))
	}
	type compiled struct {
		doc string
		sch *jsonschema.Schema
		q   *quickSchema
	}
	var all []compiled
	for _, doc := range quickSchemas {
		sch := compileTestSchema(f, doc)
		all = append(all, compiled{doc, sch, compileQuick(sch)})
	}
	f.Fuzz(func(t *testing.T, inst []byte) {
		for _, c := range all {
			agree(t, c.doc, c.sch, c.q, inst)
		}
	})
}

func TestQuickVerdicts(t *testing.T) {
	q := compileQuick(compileTestSchema(t, `{"type":"object","required":["id"]}`))
	for inst, want := range map[string]verdict{
		`{"id":1}`:        valid,
		`{}`:              invalid,
		`{"id":1,"id":2}`: unsure, // the validator keeps the last one
		`{"i\u0064":1}`:   unsure,
	} {
		if got := q.check([]byte(inst)); got != want {
			t.Errorf("%s: %v, want %v", inst, got, want)
		}
	}
}

func TestPlainJSONTextMatchesByteByByte(t *testing.T) {
	plain := func(b []byte) bool {
		for _, c := range b {
			if c == '"' || c == '\\' || c < 0x20 {
				return false
			}
		}
		return true
	}
	var word [8]byte
	for _, fill := range []byte{'a', ' ', 0x7f, 0x80, 0xff, '!', '#', '[', ']'} {
		for pos := range 8 {
			for c := range 256 {
				for i := range word {
					word[i] = fill
				}
				word[pos] = byte(c)
				if got, want := plainJSONText(binary.LittleEndian.Uint64(word[:])), plain(word[:]); got != want {
					t.Fatalf("%q: plainJSONText %v, want %v", word, got, want)
				}
			}
		}
	}
}
