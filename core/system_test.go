package core

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The hand-written system frames must say exactly what encoding/json would.
func TestHandWrittenSystemFramesMatchEncodingJSON(t *testing.T) {
	same := func(name string, got []byte, want any) {
		t.Helper()
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("%s: %s is not JSON: %v", name, got, err)
		}
		wb, _ := json.Marshal(want)
		_ = json.Unmarshal(wb, &w)
		if !reflect.DeepEqual(g, w) {
			t.Fatalf("%s:\n got %s\nwant %s", name, got, wb)
		}
	}
	id := "c-1 \"quoted\" <tag> \u2028"
	same("ack", ackFrame(id, 1764100000000123), systemFrame{"relay.ack", ackData{ID: id, Seq: 1764100000000123}})
	same("presence", presenceFrame("miniapp", false), systemFrame{"relay.presence", presenceData{Env: "miniapp", Online: false}})
	h := helloData{Session: "s-1", Env: "h5", Peers: []string{"miniapp", "pc"}, Seq: 42, Resumed: true, Heartbeat: 25000,
		Limits: helloLimits{MessagesPerSecond: 12.5, Burst: 25, MaxFrameBytes: 65536}}
	same("hello", helloFrame(h), systemFrame{"relay.hello", h})
	h.Peers = []string{}
	same("hello without peers", helloFrame(h), systemFrame{"relay.hello", h})
}

// What encoding/json would write for the hand-written frames.
type presenceData struct {
	Env    string `json:"env"`
	Online bool   `json:"online"`
}

type ackData struct {
	ID  string `json:"id"`
	Seq uint64 `json:"seq"`
}
