package handlers_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	_ "github.com/pairrelay/relay/handlers"
)

// A handler is built from its YAML settings through the registry, then
// handles messages.
func Example() {
	hc, err := config.NewHandlerConfig(`
handler: transform
rename: {data.name: data.title}
set:
  type: "'material.added'"
  data.by: from
`, "example.yaml")
	if err != nil {
		panic(err)
	}
	h, err := core.BuildHandler(context.Background(), &hc, core.ProvisionEnv{Log: slog.Default(), BaseDir: "."})
	if err != nil {
		panic(err)
	}
	m := &core.Message{Type: "addMaterial", Data: []byte(`{"id":1,"name":"poster"}`), From: "h5"}
	out, err := h.Handle(context.Background(), m)
	fmt.Println(out[0].Type, string(out[0].Data), err)
	// Output: material.added {"by":"h5","id":1,"title":"poster"} <nil>
}

// A bad setting is reported with its file, line and handler.
func Example_badConfig() {
	hc, _ := config.NewHandlerConfig("handler: filter\nexpr: sender == 'h5'", "relay.yaml")
	_, err := core.BuildHandler(context.Background(), &hc, core.ProvisionEnv{Log: slog.Default(), BaseDir: "."})
	fmt.Println(err)
	// Output:
	// relay.yaml:1: handler (filter): expr: invalid expression: unknown name sender (1:1)
	//  | sender == 'h5'
	//  | ^
}
