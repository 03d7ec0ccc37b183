package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/pairrelay/relay/plugins/sdk"
	"github.com/pairrelay/relay/plugins/sdk/sdktest"
)

func TestEnricher(t *testing.T) {
	p := sdktest.Start(t, &enricher{}, `{"field":"at"}`)
	out, err := p.Handle(context.Background(), &sdk.Message{Type: "addMaterial", Data: []byte(`{"title":"rose"}`)})
	if err != nil || len(out) != 1 {
		t.Fatalf("Handle = %v, %v; want one message", out, err)
	}
	var data map[string]any
	if err := json.Unmarshal(out[0].Data, &data); err != nil {
		t.Fatal(err)
	}
	if data["titleUpper"] != "ROSE" || data["at"] == nil {
		t.Errorf("data = %v, want titleUpper ROSE and at", data)
	}

	_, err = p.Handle(context.Background(), &sdk.Message{Type: "addMaterial", Data: []byte(`[1]`)})
	var rej *sdk.RejectError
	if !errors.As(err, &rej) || rej.Code != "invalid_data" {
		t.Errorf("Handle([1]) error = %v, want reject invalid_data", err)
	}
}

func TestEnricherRefusesUnknownConfig(t *testing.T) {
	if _, err := sdktest.New(&enricher{}, []byte(`{"feild":"x"}`)); err == nil {
		t.Fatal("Configure accepted an unknown key")
	}
}
