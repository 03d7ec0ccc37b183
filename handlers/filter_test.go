package handlers

import (
	"context"
	"testing"

	"github.com/pairrelay/relay/core"
)

func TestFilter(t *testing.T) {
	toMini := msg("addMaterial", `{"size":10}`)
	toMini.To = []string{"miniapp"}
	cases := []struct {
		name   string
		config string
		msg    *core.Message
		want   string
	}{
		{"keep true", "handler: filter\nexpr: from == 'h5'", msg("x", ""), "pass"},
		{"keep false", "handler: filter\nexpr: from == 'pc'", msg("x", ""), "drop"},
		{"drop true", "handler: filter\nexpr: from == 'h5'\naction: drop", msg("x", ""), "drop"},
		{"drop false", "handler: filter\nexpr: from == 'pc'\naction: drop", msg("x", ""), "pass"},
		{"data field", "handler: filter\nexpr: data.size < 100", msg("x", `{"size":10}`), "pass"},
		{"data float", "handler: filter\nexpr: data.size < 100", msg("x", `{"size":100.5}`), "drop"},
		{"missing key is nil", "handler: filter\nexpr: data.tag == nil", msg("x", `{"size":1}`), "pass"},
		{"optional chain", "handler: filter\nexpr: data?.meta?.ok ?? false", msg("x", `{"size":1}`), "drop"},
		{"type glob", "handler: filter\nexpr: type startsWith 'material.'", msg("material.added", ""), "pass"},
		{"to", "handler: filter\nexpr: \"'miniapp' in to\"", toMini, "pass"},
		{"to absent", "handler: filter\nexpr: to == nil", msg("x", ""), "pass"},
		{"auth claims", "handler: filter\nexpr: claims?.role == 'editor'", withClaims(msg("x", ""), map[string]any{"role": "editor"}), "pass"},
		{"no auth claims", "handler: filter\nexpr: claims?.role == 'editor'", msg("x", ""), "drop"},
		{"eval error is a failure", "handler: filter\nexpr: data.size > 3", msg("x", `"text"`), "fail"},
		{"nil comparison is a failure", "handler: filter\nexpr: data.meta.ok", msg("x", `{}`), "fail"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := build(t, tc.config)
			out, err := h.Handle(context.Background(), tc.msg)
			if got := outcome(out, err); got != tc.want {
				t.Fatalf("outcome = %s (err %v), want %s", got, err, tc.want)
			}
			if tc.want == "pass" && out[0] != tc.msg {
				t.Errorf("filter replaced the message")
			}
		})
	}
}

func withClaims(m *core.Message, claims map[string]any) *core.Message {
	m.Claims = claims
	return m
}
