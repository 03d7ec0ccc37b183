package handlers

import (
	"context"
	"testing"

	"github.com/pairrelay/relay/core"
)

const addMaterialSchema = `handler: validate
schema:
  type: object
  required: [id, name]
  properties:
    id: {type: integer, minimum: 1}
    name: {type: string, minLength: 1}
    email: {type: string, format: email}
    items:
      type: array
      items: {type: object, required: [sku]}
`

func TestValidate(t *testing.T) {
	cases := []struct {
		name    string
		config  string
		msg     *core.Message
		want    string // outcome
		message string // the rejection's text
	}{
		{"valid", addMaterialSchema, msg("addMaterial", `{"id":1,"name":"a"}`), "pass", ""},
		{"missing property", addMaterialSchema, msg("addMaterial", `{"id":1}`), "reject:invalid_message",
			"data.name: missing property"},
		{"two problems", addMaterialSchema, msg("addMaterial", `{"id":0,"name":7}`), "reject:invalid_message",
			"data.id: must be >= 1, got 0; data.name: must be string, got number"},
		{"array index in path", addMaterialSchema, msg("addMaterial", `{"id":1,"name":"a","items":[{"sku":1},{}]}`),
			"reject:invalid_message", "data.items[1].sku: missing property"},
		{"format is asserted", addMaterialSchema, msg("addMaterial", `{"id":1,"name":"a","email":"nope"}`),
			"reject:invalid_message", "data.email: 'nope' is not valid email: missing @"},
		{"absent data is null", addMaterialSchema, msg("addMaterial", ""), "reject:invalid_message",
			"data: must be object, got null"},
		{"null allowed", "handler: validate\nschema: {type: [object, \"null\"]}", msg("ping", ""), "pass", ""},
		{"odd key quoted", "handler: validate\nschema: {properties: {\"a b\": {type: string}}}", msg("x", `{"a b":1}`),
			"reject:invalid_message", `data["a b"]: must be string, got number`},
		{"schema file with ref", "handler: validate\nschema_file: schemas/material.json", msg("addMaterial", `{"id":1,"name":"a","url":"http://x/y"}`), "pass", ""},
		{"schema file ref format", "handler: validate\nschema_file: schemas/material.json", msg("addMaterial", `{"id":1,"name":"a","url":"not a uri"}`),
			"reject:invalid_message", "data.url: 'not a uri' is not valid uri: relative url"},
		{"additional property", "handler: validate\nschema_file: schemas/material.json", msg("addMaterial", `{"id":1,"name":"a","extra":true}`),
			"reject:invalid_message", "data.extra: property not allowed"},
		{"target message", "handler: validate\ntarget: message\nschema_file: schemas/envelope.yaml", msg("addMaterial", `{}`), "pass", ""},
		{"target message wrong type", "handler: validate\ntarget: message\nschema_file: schemas/envelope.yaml", msg("removeMaterial", `{}`),
			"reject:invalid_message", "message.type: value must be 'addMaterial'"},
		{"target message no data", "handler: validate\ntarget: message\nschema_file: schemas/envelope.yaml", msg("addMaterial", ""),
			"reject:invalid_message", "message.data: missing property"},
		{"target message to", "handler: validate\ntarget: message\nschema_file: schemas/envelope.yaml",
			func() *core.Message { m := msg("addMaterial", "1"); m.To = []string{"h5", "pc"}; return m }(),
			"reject:invalid_message", "message.to[1]: value must be one of 'miniapp', 'h5'"},
		{"lengths", "handler: validate\nschema: {type: array, maxItems: 1, items: {type: string, minLength: 2}}", msg("x", `["a","bb"]`),
			"reject:invalid_message", "data: must have at most 1 items, got 2; data[0]: must be at least 2 characters long, got 1"},
		{"many problems are capped", "handler: validate\nschema: {required: [a, b, c, d, e, f, g]}", msg("x", `{}`),
			"reject:invalid_message", "data.a: missing property; data.b: missing property; data.c: missing property; data.d: missing property; data.e: missing property; and 2 more"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := build(t, tc.config)
			before := string(tc.msg.Data)
			out, err := h.Handle(context.Background(), tc.msg)
			if got := outcome(out, err); got != tc.want {
				t.Fatalf("outcome = %s (err %v), want %s", got, err, tc.want)
			}
			if tc.message != "" {
				if got := err.(*core.ClientError).Message; got != tc.message {
					t.Errorf("message = %q\nwant      %q", got, tc.message)
				}
			}
			if tc.want == "pass" && (out[0] != tc.msg || string(out[0].Data) != before) {
				t.Errorf("validate changed the message")
			}
		})
	}
}
