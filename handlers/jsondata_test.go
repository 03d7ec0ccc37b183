package handlers

import (
	"bytes"
	"encoding/json"
	"testing"
)

// stdEncode is what encoding/json writes, without HTML escaping.
func stdEncode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

var encodeSeeds = []string{
	`{"b":1,"a":[true,false,null],"c":{"z":"<&>","y":"\u2028\u2029"}}`,
	`"ctl \u0000 \u001f \b \f \n \r \t \" \\ / é 😀"`,
	`[1.5, -0, 1e21, 1e-7, 123456789012345678901234567890, 0.000001, 3.0, -12, 1E+2]`,
	`{"":"", "a.b": {"\u00e9": []}}`,
	`12345678901234567890`,
}

func FuzzEncodeData(f *testing.F) {
	for _, s := range encodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := decodeData(raw)
		if err != nil {
			return
		}
		got, err := encodeData(v)
		if err != nil {
			t.Fatalf("encodeData(%s): %v", raw, err)
		}
		want, err := stdEncode(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("encodeData(%s)\n got %s\nwant %s", raw, got, want)
		}
	})
}

func TestEncodeInvalidUTF8AndOddValues(t *testing.T) {
	for _, v := range []any{"bad \xff utf8 \xc3", map[string]any{"t": []string{"a"}, "f": 0.1, "n": int64(-3)}} {
		got, err := encodeData(v)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := stdEncode(v)
		if !bytes.Equal(got, want) {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	if _, err := encodeData(map[string]any{"x": 1.0 / zero()}); err == nil {
		t.Error("Inf encoded")
	}
}

func zero() float64 { return 0 }
