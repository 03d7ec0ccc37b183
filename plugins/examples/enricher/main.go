// Command enricher is a relay plugin: it stamps addMaterial messages with
// the time relay handed them over and a title in upper case.
package main

import (
	"context"
	"strings"
	"time"

	"github.com/pairrelay/relay/plugins/sdk"
)

type enricher struct {
	Field string `json:"field"` // the key that receives the time (default enrichedAt)
}

func (e *enricher) Configure(config []byte) error {
	e.Field = "enrichedAt"
	return sdk.DecodeConfig(config, e)
}

func (e *enricher) Handle(ctx context.Context, m *sdk.Message) ([]*sdk.Message, error) {
	var data map[string]any
	if err := m.DecodeData(&data); err != nil {
		return nil, sdk.Reject("invalid_data", "addMaterial needs an object as data")
	}
	data[e.Field] = time.Now().UnixMilli()
	if title, ok := data["title"].(string); ok {
		data["titleUpper"] = strings.ToUpper(title)
	}
	return []*sdk.Message{m}, m.SetData(data)
}

func main() { sdk.Serve(&enricher{}) }
