package handlers

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pairrelay/relay/core"
)

func TestTransform(t *testing.T) {
	cases := []struct {
		name     string
		config   string
		msg      *core.Message
		want     string // outcome
		wantType string // "" : unchanged
		wantTo   []string
		wantData string // JSON compared by value; "-" : absent
		errHas   string // for failures
	}{
		{"set from expression", "handler: transform\nset:\n  data.by: from\n  data.kind: \"'material'\"",
			msg("addMaterial", `{"id":1}`), "pass", "", nil, `{"id":1,"by":"h5","kind":"material"}`, ""},
		{"set type and to", "handler: transform\nset:\n  type: \"'material.added'\"\n  to: \"['miniapp']\"",
			msg("addMaterial", `{"id":1}`), "pass", "material.added", []string{"miniapp"}, `{"id":1}`, ""},
		{"type from data", "handler: transform\nset:\n  type: \"'material.' + data.op\"",
			msg("material", `{"op":"added"}`), "pass", "material.added", nil, `{"op":"added"}`, ""},
		{"creates missing objects", "handler: transform\nset:\n  data.meta.by.env: from",
			msg("x", `{"meta":null}`), "pass", "", nil, `{"meta":{"by":{"env":"h5"}}}`, ""},
		{"absent data becomes an object", "handler: transform\nset:\n  data.by: from",
			msg("x", ""), "pass", "", nil, `{"by":"h5"}`, ""},
		{"set into a non-object fails", "handler: transform\nset:\n  data.meta.by: from",
			msg("x", `{"meta":"text"}`), "fail", "", nil, `{"meta":"text"}`, "cannot set data.meta.by: data.meta is a string, not an object"},
		{"set into non-object data fails", "handler: transform\nset:\n  data.by: from",
			msg("x", `[1,2]`), "fail", "", nil, `[1,2]`, "cannot set data.by: data is an array, not an object"},
		{"rename", "handler: transform\nrename:\n  data.name: data.title\n  data.a.b: data.c",
			msg("x", `{"name":"n","a":{"b":1,"k":2}}`), "pass", "", nil, `{"title":"n","a":{"k":2},"c":1}`, ""},
		{"rename missing is a no-op", "handler: transform\nrename:\n  data.name: data.title",
			msg("x", `{"id":1}`), "pass", "", nil, `{"id":1}`, ""},
		{"delete", "handler: transform\ndelete: [data.secret, data.a.b, data.missing, to]",
			func() *core.Message {
				m := msg("x", `{"secret":1,"a":{"b":2},"keep":true}`)
				m.To = []string{"pc"}
				return m
			}(),
			"pass", "", nil, `{"a":{},"keep":true}`, ""},
		{"delete data", "handler: transform\ndelete: [data]", msg("x", `{"a":1}`), "pass", "", nil, "-", ""},
		{"order: rename, delete, then set sees both", "handler: transform\nrename: {data.a: data.b}\ndelete: [data.c]\nset:\n  data.seen: \"data.b + (data.c == nil ? ' without c' : ' with c')\"",
			msg("x", `{"a":"A","c":3}`), "pass", "", nil, `{"b":"A","seen":"A without c"}`, ""},
		{"set copies, never aliases", "handler: transform\nset:\n  data.copy: data.orig\n  data.orig.x: \"1\"",
			msg("x", `{"orig":{"y":2}}`), "pass", "", nil, `{"orig":{"x":1,"y":2},"copy":{"y":2}}`, ""},
		{"numbers survive", "handler: transform\nset:\n  data.n2: data.n + 1",
			msg("x", `{"n":41,"big":12345678901234567890,"f":1.5}`), "pass", "", nil, `{"n":41,"n2":42,"big":12345678901234567890,"f":1.5}`, ""},
		{"html is not escaped", "handler: transform\nset:\n  data.t: \"'<b>&'\"",
			msg("x", `{}`), "pass", "", nil, `{"t":"<b>&"}`, ""},
		{"type must be a string", "handler: transform\nset:\n  type: data.kind",
			msg("x", `{"kind":3}`), "fail", "", nil, `{"kind":3}`, "set type: got a number, want a non-empty type not starting with relay."},
		{"reserved type", "handler: transform\nset:\n  type: \"'relay.hello'\"",
			msg("x", `{}`), "fail", "", nil, `{}`, `set type: got the string "relay.hello"`},
		{"to must be env names", "handler: transform\nset:\n  to: \"['Mini App']\"",
			msg("x", `{}`), "fail", "", nil, `{}`, `set to: "Mini App" is not an env name`},
		{"to as a string is explained", "handler: transform\nset:\n  to: \"'miniapp'\"",
			msg("x", `{}`), "fail", "", nil, `{}`, `want a list such as ['miniapp']`},
		{"expression error is a failure", "handler: transform\nset:\n  data.x: data.a.b.c",
			msg("x", `{"a":1}`), "fail", "", nil, `{"a":1}`, "set data.x:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := build(t, tc.config)
			origType, origData := tc.msg.Type, tc.msg.Data
			origBytes := string(origData)
			out, err := h.Handle(context.Background(), tc.msg)
			if got := outcome(out, err); got != tc.want {
				t.Fatalf("outcome = %s (err %v), want %s", got, err, tc.want)
			}
			if string(origData) != origBytes {
				t.Fatalf("transform wrote into the old data slice")
			}
			if tc.want == "fail" {
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("error = %q, want it to contain %q", err, tc.errHas)
				}
				if tc.msg.Type != origType || string(tc.msg.Data) != origBytes {
					t.Errorf("a failed transform changed the message")
				}
				return
			}
			m := out[0]
			wantType := tc.wantType
			if wantType == "" {
				wantType = origType
			}
			if m.Type != wantType {
				t.Errorf("type = %q, want %q", m.Type, wantType)
			}
			if !slices.Equal(m.To, tc.wantTo) {
				t.Errorf("to = %v, want %v", m.To, tc.wantTo)
			}
			if tc.wantData == "-" {
				if m.Data != nil {
					t.Errorf("data = %s, want none", m.Data)
				}
			} else if !jsonEqual(t, m.Data, tc.wantData) {
				t.Errorf("data = %s, want %s", m.Data, tc.wantData)
			}
		})
	}
}

func TestTransformNowAndUUID(t *testing.T) {
	h := build(t, "handler: transform\nset:\n  data.receivedAt: now()\n  data.uid: uuid()")
	before := time.Now().UnixMilli()
	out, err := h.Handle(context.Background(), msg("x", `{}`))
	if err != nil {
		t.Fatal(err)
	}
	env, _ := decodeData(out[0].Data)
	d := env.(map[string]any)
	if at, _ := d["receivedAt"].(int); int64(at) < before || int64(at) > time.Now().UnixMilli() {
		t.Errorf("receivedAt = %v, want about %d", d["receivedAt"], before)
	}
	if id, _ := d["uid"].(string); len(id) != 36 || id[14] != '4' || strings.Count(id, "-") != 4 {
		t.Errorf("uid = %v, want a UUID v4", d["uid"])
	}
}

// TestTransformConcurrent runs one transform from many goroutines (for -race).
func TestTransformConcurrent(t *testing.T) {
	h := build(t, "handler: transform\nset:\n  data.n2: data.n * 2\n  data.by: from")
	done := make(chan error)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 200; i++ {
				out, err := h.Handle(context.Background(), msg("x", `{"n":21}`))
				if err == nil && !strings.Contains(string(out[0].Data), `"n2":42`) {
					err = errString(string(out[0].Data))
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// The raw append path and the general path must give the same JSON value.
func TestTransformAppendPathMatchesGeneralPath(t *testing.T) {
	stamp := build(t, "handler: transform\nset: {data.by: from, data.n: '1 + 1', data.tag: \"'x'\"}\n")
	if !stamp.(*Transform).appendOnly {
		t.Fatal("a set of new top-level keys from data-free expressions should take the append path")
	}
	general := &Transform{Set: map[string]string{"data.by": "from", "data.n": "1 + 1", "data.tag": "'x'"}}
	if err := general.Provision(context.Background(), core.ProvisionEnv{}); err != nil {
		t.Fatal(err)
	}
	general.appendOnly = false
	for _, data := range []string{
		`{"id":7,"name":"wood"}`,
		` { "id" : 7 , "nested" : { "a" : [1, 2] } } `,
		`{}`,
		`{ }`,
		`{"by":"already here"}`,        // takes the general path: the key exists
		`{"note":"by the way \"by\""}`, // escapes: general path
		`[1,2]`,                        // not an object: general path
	} {
		a := &core.Message{Type: "x", From: "h5", Data: []byte(data)}
		b := &core.Message{Type: "x", From: "h5", Data: []byte(data)}
		outA, errA := stamp.Handle(context.Background(), a)
		outB, errB := general.Handle(context.Background(), b)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("%s: errors differ: %v / %v", data, errA, errB)
		}
		if errA != nil {
			continue
		}
		var va, vb any
		if err := json.Unmarshal(outA[0].Data, &va); err != nil {
			t.Fatalf("%s: append path wrote invalid JSON %s", data, outA[0].Data)
		}
		_ = json.Unmarshal(outB[0].Data, &vb)
		if !reflect.DeepEqual(va, vb) {
			t.Fatalf("%s:\n append  %s\n general %s", data, outA[0].Data, outB[0].Data)
		}
	}
	// The append path keeps the bytes it was given.
	m := &core.Message{Type: "x", From: "h5", Data: []byte(`{"z":1, "a":2}`)}
	out, _ := stamp.Handle(context.Background(), m)
	if got := string(out[0].Data); got != `{"z":1, "a":2,"by":"h5","n":2,"tag":"x"}` {
		t.Fatalf("append path wrote %s", got)
	}
}
