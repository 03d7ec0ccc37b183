package core

import (
	"encoding/json"
	"slices"
	"testing"
	"unicode/utf8"
)

var v1Frames = []string{
	`{"type":"addMaterial","data":{"id":1,"name":"a"},"to":["miniapp"],"id":"c-1"}`,
	`{"type":"x"}`,
	` { "type" : "spaced" , "data" : [ 1 , 2.5e-3 , -0 , true , false , null , "s\"\\\/\b\f\n\r\t\u00e9" ] } `,
	`{"type":"esc\u0061ped","id":"i\n"}`,
	`{"data":{"type":"inner"},"type":"outer"}`,
	`{"type":"a","type":"b"}`,
	`{"type":"x","to":null,"id":null,"data":null}`,
	`{"type":"x","to":[]}`,
	`{"type":"x","extra":{"deep":[[[[]]]]}}`,
	`{"TYPE":"x"}`,
	`{"type":"x",}`,
	`{"type":"x"} trailing`,
	`{"type":01}`,
	`{"type":"x","data":1.}`,
	`{"type":"x","data":"\x01"}`,
	`{"type":"x","data":"\uZZZZ"}`,
	`{"type":"x","data":tru}`,
	`[{"type":"x"}]`,
	`"just a string"`,
	``,
	`{`,
	`{"type"`,
	`{"type":"x","to":["h5",1]}`,
	`{"type":5}`,
}

// FuzzParseV1 holds the hand-written parser to encoding/json: it accepts
// exactly the valid JSON, and reads the same fields.
func FuzzParseV1(f *testing.F) {
	for _, frame := range v1Frames {
		f.Add([]byte(frame))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		var m Message
		cerr := parseV1(frame, &m)
		if !utf8.Valid(frame) {
			// Text frames are UTF-8; encoding/json would let this pass.
			if cerr == nil || cerr.Code != ErrInvalidUTF8 {
				t.Fatalf("%q is not UTF-8 but parseV1 said %v", frame, cerr)
			}
			return
		}
		valid := json.Valid(frame)
		if !valid {
			if cerr == nil || (cerr.Code != ErrInvalidJSON && cerr.Code != ErrInvalidUTF8) {
				t.Fatalf("%q is not JSON but parseV1 said %v", frame, cerr)
			}
			return
		}
		if cerr != nil && (cerr.Code == ErrInvalidJSON || cerr.Code == ErrInvalidUTF8) {
			t.Fatalf("%q is valid JSON but parseV1 said %v", frame, cerr)
		}
		if cerr != nil {
			return
		}
		// Keys match exactly (a map decodes them so), the last one winning.
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(frame, &fields); err != nil {
			t.Fatalf("accepted %q, which is no JSON object: %v", frame, err)
		}
		var typ, id string
		var to []string
		_ = json.Unmarshal(fields["type"], &typ)
		_ = json.Unmarshal(fields["id"], &id)
		_ = json.Unmarshal(fields["to"], &to)
		if m.Type != typ || m.ID != id || !slices.Equal(m.To, to) {
			t.Fatalf("%q: got type %q id %q to %v; encoding/json reads %q %q %v", frame, m.Type, m.ID, m.To, typ, id, to)
		}
		if data, ok := fields["data"]; ok && string(m.Data) != string(data) {
			t.Fatalf("%q: data %s, want %s", frame, m.Data, data)
		}
	})
}

func TestParseV1Depth(t *testing.T) {
	deep := `{"type":"x","data":` + string(slices.Repeat([]byte("["), 600)) + string(slices.Repeat([]byte("]"), 600)) + `}`
	var m Message
	if err := parseV1([]byte(deep), &m); err == nil || err.Code != ErrInvalidJSON {
		t.Fatalf("600 levels of nesting: %v", err)
	}
}

func BenchmarkParseV1(b *testing.B) {
	frame := []byte(`{"type":"addMaterial","data":{"id":12345,"name":"a material with a name","tags":["x","y","z"],"price":12.5,"note":"` +
		string(slices.Repeat([]byte("n"), 120)) + `"},"id":"c-17"}`)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		var m Message
		if err := parseV1(frame, &m); err != nil {
			b.Fatal(err)
		}
	}
}
