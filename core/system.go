package core

import (
	"encoding/json"
	"strconv"
)

// System frames (relay → client, wire v1 only). Field names are the protocol.

type helloData struct {
	Session   string      `json:"session"`
	Env       string      `json:"env"`
	Peers     []string    `json:"peers"`
	Seq       uint64      `json:"seq"`
	Resumed   bool        `json:"resumed"`
	Heartbeat int64       `json:"heartbeat"` // ms between relay.ping the client should send
	Limits    helloLimits `json:"limits"`
}

// helloLimits tell a client how fast it may send, so that it can pace a
// backlog instead of running into rate_limited.
type helloLimits struct {
	MessagesPerSecond float64 `json:"messagesPerSecond"` // 0: no limit
	Burst             int     `json:"burst"`
	MaxFrameBytes     int     `json:"maxFrameBytes"`
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

// The frequent system frames are written by hand: acks go out for every
// message with an id, and encoding/json's reflection would cost more than
// the rest of the relaying.

func ackFrame(id string, seq uint64) []byte {
	b := make([]byte, 0, 48+len(id))
	b = append(b, `{"type":"relay.ack","data":{"id":`...)
	b = appendJSString(b, []byte(id))
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, "}}"...)
}

func presenceFrame(env string, online bool) []byte {
	b := make([]byte, 0, 64+len(env))
	b = append(b, `{"type":"relay.presence","data":{"env":`...)
	b = appendJSString(b, []byte(env))
	b = append(b, `,"online":`...)
	b = strconv.AppendBool(b, online)
	return append(b, "}}"...)
}

func helloFrame(h helloData) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":"relay.hello","data":{"session":`...)
	b = appendJSString(b, []byte(h.Session))
	b = append(b, `,"env":`...)
	b = appendJSString(b, []byte(h.Env))
	b = append(b, `,"peers":[`...)
	for i, p := range h.Peers {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSString(b, []byte(p))
	}
	b = append(b, `],"seq":`...)
	b = strconv.AppendUint(b, h.Seq, 10)
	b = append(b, `,"resumed":`...)
	b = strconv.AppendBool(b, h.Resumed)
	b = append(b, `,"heartbeat":`...)
	b = strconv.AppendInt(b, h.Heartbeat, 10)
	b = append(b, `,"limits":{"messagesPerSecond":`...)
	b = strconv.AppendFloat(b, h.Limits.MessagesPerSecond, 'g', -1, 64)
	b = append(b, `,"burst":`...)
	b = strconv.AppendInt(b, int64(h.Limits.Burst), 10)
	b = append(b, `,"maxFrameBytes":`...)
	b = strconv.AppendInt(b, int64(h.Limits.MaxFrameBytes), 10)
	return append(b, "}}}"...)
}
