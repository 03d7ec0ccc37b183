package core

import (
	"encoding/json"
)

// System frames (relay → client, wire v1 only). Field names are the protocol.

type helloData struct {
	Session   string   `json:"session"`
	Env       string   `json:"env"`
	Peers     []string `json:"peers"`
	Seq       uint64   `json:"seq"`
	Resumed   bool     `json:"resumed"`
	Heartbeat int64    `json:"heartbeat"` // ms between relay.ping the client should send
}

type presenceData struct {
	Env    string `json:"env"`
	Online bool   `json:"online"`
}

type ackData struct {
	ID  string `json:"id"`
	Seq uint64 `json:"seq"`
}

type errorData struct {
	ID      string `json:"id,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Route   string `json:"route,omitempty"`
	Ref     string `json:"ref"`
}

type systemFrame struct {
	Type string `json:"type"`
	Data any    `json:"data"`
}

func encodeSystem(typ string, data any) []byte {
	b, err := json.Marshal(systemFrame{Type: typ, Data: data})
	if err != nil {
		// Only our own fixed structs are encoded here.
		panic("relay: encoding " + typ + ": " + err.Error())
	}
	return b
}

var pongFrame = []byte(`{"type":"relay.pong","data":{}}`)
