package redisbp

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/pairrelay/relay/core"
)

func TestCodecRoundTripsEveryField(t *testing.T) {
	parsedSeed := core.NewSeedMessageFromText([]byte(`{"type":"add","data":{"a":"<&>"}}`))
	parsedSeed.Resolve()
	changedSeed := core.NewSeedMessageFromText([]byte(`{"type":"add","data":1}`))
	changedSeed.Resolve()
	changedSeed.Type = "renamed"
	for name, m := range map[string]*core.Message{
		"v1": {Type: "addMaterial", Data: json.RawMessage("{ \"x\" : \"<b>&\\u2028\" ,\n \"n\":1e3 }"),
			To: []string{"miniapp", "pc"}, ID: "c-17", From: "h5", TS: 1764100000123},
		"no data, empty to":  {Type: "t", To: []string{}, From: "h5", TS: -5},
		"empty data":         {Type: "t", Data: json.RawMessage{}, From: "h5"},
		"seed unparsed":      core.NewSeedMessageFromText([]byte("plain text \"quoted\" ünïcode")),
		"seed parsed intact": parsedSeed,
		"seed changed":       changedSeed,
	} {
		t.Run(name, func(t *testing.T) {
			got, err := decodeMessage(encodeMessage(nil, m))
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != m.Type || string(got.Data) != string(m.Data) || (got.Data == nil) != (m.Data == nil) ||
				!reflect.DeepEqual(got.To, m.To) || (got.To == nil) != (m.To == nil) ||
				got.ID != m.ID || got.From != m.From || got.TS != m.TS {
				t.Fatalf("round trip:\n got  %+v\n want %+v", got, m)
			}
			if string(got.SeedText()) != string(m.SeedText()) || (got.SeedText() == nil) != (m.SeedText() == nil) {
				t.Fatalf("seed text %q, want %q", got.SeedText(), m.SeedText())
			}
		})
	}
}

func TestCodecRejectsGarbage(t *testing.T) {
	good := encodeMessage(nil, &core.Message{Type: "t", Data: json.RawMessage(`1`), From: "h5"})
	for _, b := range [][]byte{nil, {9, 0}, good[:len(good)-1], append(append([]byte{}, good...), 0)} {
		if _, err := decodeMessage(b); err == nil {
			t.Fatalf("decoded %q", b)
		}
	}
}
