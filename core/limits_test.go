package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/pairrelay/relay/config"
)

// TestHandlerOutputObeysTheFrameLimit: a message a handler returns that is
// larger than limits.max_frame_bytes is a failure of that handler, which
// the route's on_error turns into a reject, a pass of the handler's input
// or a drop, like any other failure.
func TestHandlerOutputObeysTheFrameLimit(t *testing.T) {
	const limit = 1024
	in := func() *Message {
		return &Message{Type: "x", From: "h5", ID: "c-1", Data: []byte(`{"small":true}`)}
	}
	// The size of the message big makes of in() with data of n bytes.
	overhead := (&Message{Type: "x", ID: "c-1", Data: []byte{}}).frameSize()
	for _, tc := range []struct {
		name, onError, mode string
		bytes               int
		wantOut             int // messages out; -1: refused with handler_failed
		wantData            string
	}{
		{"at the limit passes", "reject", "big", limit - overhead, 1, ""},
		{"one byte more fails", "reject", "big", limit - overhead + 1, -1, ""},
		{"far more fails", "reject", "big", 5 << 20, -1, ""},
		{"on_error pass passes the input", "pass", "big", 5 << 20, 1, `{"small":true}`},
		{"on_error drop drops it", "drop", "big", 5 << 20, 0, ""},
		{"input changed in place cannot pass", "pass", "grow", 5 << 20, -1, ""},
		{"fan-out with one too large fails whole", "reject", "fanbig", 5 << 20, -1, ""},
		{"fan-out with one too large, on_error pass", "pass", "fanbig", 5 << 20, 1, `{"small":true}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pipelineFrom(t, fmt.Sprintf(`
limits: {max_frame_bytes: %d}
routes:
  - match: {type: x}
    on_error: %s
    handlers: [{handler: test-step, mode: %s, bytes: %d}]
`, limit, tc.onError, tc.mode, tc.bytes))
			out, route, err := p.Process(context.Background(), in())
			if tc.wantOut < 0 {
				var cerr *ClientError
				if !errors.As(err, &cerr) || cerr.Code != ErrHandlerFailed || route != "x" {
					t.Fatalf("got %d messages, err %v via %q; want handler_failed via x", len(out), err, route)
				}
				if cerr.cause == nil || !strings.Contains(cerr.cause.Error(), "limits.max_frame_bytes (1024)") {
					t.Fatalf("the log's cause does not name the limit: %v", cerr.cause)
				}
				if strings.Contains(cerr.Message, "1024") {
					t.Fatalf("details reached the sender: %q", cerr.Message)
				}
				return
			}
			if err != nil || len(out) != tc.wantOut {
				t.Fatalf("got %d messages, err %v; want %d", len(out), err, tc.wantOut)
			}
			if tc.wantData != "" && string(out[0].Data) != tc.wantData {
				t.Fatalf("passed data %.40q, want the input's %s", out[0].Data, tc.wantData)
			}
			for _, o := range out {
				if o.frameSize() > limit {
					t.Fatalf("a message of %d bytes went on", o.frameSize())
				}
			}
		})
	}
}

// TestLaterHandlersSeeOnlyMessagesWithinTheLimit: the check runs after
// each handler, so the next one never gets an oversized message, and the
// failure is the handler's that made it.
func TestLaterHandlersSeeOnlyMessagesWithinTheLimit(t *testing.T) {
	p := pipelineFrom(t, `
limits: {max_frame_bytes: 1024}
routes:
  - match: {type: x}
    on_error: pass
    handlers:
      - {handler: test-step, mode: big, bytes: 4096}
      - {handler: test-step, mode: retype}
`)
	out, _, err := p.Process(context.Background(), &Message{Type: "x", Data: []byte(`1`)})
	if err != nil || len(out) != 1 || out[0].Type != "retyped" || string(out[0].Data) != "1" {
		t.Fatalf("out %+v, err %v; want the input passed by on_error, then retyped", out, err)
	}
}

// TestHandlerRejectionIsBounded: a refusal's code and text reach the sender
// in relay.error; a handler cannot make them any size.
func TestHandlerRejectionIsBounded(t *testing.T) {
	p := pipelineFrom(t, `
routes:
  - match: {type: x}
    handlers: [{handler: test-step, mode: rejectbig, bytes: 3000000}]
`)
	_, _, err := p.Process(context.Background(), &Message{Type: "x"})
	var cerr *ClientError
	if !errors.As(err, &cerr) {
		t.Fatalf("err = %v, want a rejection", err)
	}
	if cerr.Code != ErrRejected || len(cerr.Message) > maxRejectText+len("…") || !strings.HasSuffix(cerr.Message, "…") {
		t.Fatalf("code %.80q, message of %d bytes; want rejected and a cut message", cerr.Code, len(cerr.Message))
	}
}

// TestFrameSizeOfClientFrames: what the limit measures of a message a v1
// client sent is never more than the frame it came in, and exactly the
// frame for a compact one; so a route that passes a message on unchanged
// never refuses it.
func TestFrameSizeOfClientFrames(t *testing.T) {
	for _, frame := range []string{
		`{"type":"a"}`,
		`{"type":"a","data":{"k":[1,2,"x"]}}`,
		`{"type":"q\"\\\n\u0001é","data":"\u0000","to":["h5","miniapp"],"id":"i\t1"}`,
		`{"type":"a","to":[],"id":"1"}`,
		` { "type" : "a" , "data" : { "k" : 1 } , "to" : null , "id" : "" } `,
		`{"type":"\u0061","to":["h5"],"extra":1}`,
	} {
		m := &Message{}
		if cerr := parseV1([]byte(frame), m); cerr != nil {
			t.Fatalf("%s: %v", frame, cerr)
		}
		size := m.frameSize()
		if size > len(frame) {
			t.Errorf("%s: measured %d bytes, the frame has %d", frame, size, len(frame))
		}
		compact := !strings.ContainsAny(frame, " ") && !strings.Contains(frame, "extra") && !strings.Contains(frame, `\u0061`)
		if compact && size != len(frame) {
			t.Errorf("%s: measured %d bytes, the compact frame has %d", frame, size, len(frame))
		}
		if !m.fitsFrame(size) || m.fitsFrame(size-1) {
			t.Errorf("%s: fitsFrame disagrees with frameSize %d", frame, size)
		}
	}
	seed := newSeedMessage([]byte("not json \x01"))
	seed.Resolve()
	if seed.frameSize() != len(seed.seed) {
		t.Errorf("intact seed text measures %d, want its length %d", seed.frameSize(), len(seed.seed))
	}
}

// TestLargestGrowthFitsTheSmallestValidSendQueue: a seed text of
// max_frame_bytes control characters grows six times as receivers get it
// (each one \u00xx in a JSON string, from a sender with a 32-byte env
// name), past the smallest send queue validation allows (max_frame_bytes).
// It still reaches a v1 and a seed receiver, and a resume that replays it
// from history is not closed with 4008: no single history entry can make a
// resume impossible.
func TestLargestGrowthFitsTheSmallestValidSendQueue(t *testing.T) {
	const limit = 64 << 10
	for _, q := range []int{limit - 1, limit} {
		cfg := config.Default()
		cfg.Limits.MaxFrameBytes, cfg.Limits.SendQueueBytes = limit, q
		if err := cfg.Validate(); (err == nil) != (q == limit) {
			t.Fatalf("send_queue_bytes %d: Validate() = %v", q, err)
		}
	}
	text := strings.Repeat("\x01", limit)
	sender := strings.Repeat("s", 32)
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MaxFrameBytes, c.Limits.SendQueueBytes = limit, limit
		c.Limits.MessagesPerSecond = 0
	})
	b, _ := r.v1("grow", "v1-in")
	seedIn := r.dial("token=grow&env=seed-in")
	seedOut := r.dial("token=grow&env=" + sender)
	// Once b has read both arrivals its queue is empty: the frame, larger
	// than the queue, goes out alone (behind another frame it would close b
	// with 4008, and the resume below would bring it).
	b.readType("relay.presence")
	b.readType("relay.presence")
	seedOut.send(text)
	check := func(c *client) uint64 {
		t.Helper()
		m := c.readType("", "relay.presence")
		if m["data"] != text || m["from"] != sender {
			t.Fatalf("v1 receiver got data of %d bytes from %v, want the text", len(fmt.Sprint(m["data"])), m["from"])
		}
		return uint64(m["seq"].(float64))
	}
	seq := check(b)
	var inner string
	if err := json.Unmarshal([]byte(seedIn.read()), &inner); err != nil || inner != text {
		t.Fatalf("seed receiver got %d bytes of text (%v), want the text", len(inner), err)
	}

	_ = b.conn.Close()
	b2 := r.dial("v=1&since=0&token=grow&env=v1-in")
	if hello := b2.readJSON(); hello["type"] != "relay.hello" || hello["data"].(map[string]any)["resumed"] != true {
		t.Fatalf("got %v, want relay.hello resumed:true", hello)
	}
	if again := check(b2); again != seq {
		t.Fatalf("replayed seq %d, want %d", again, seq)
	}
	seedOut.send("live")
	if m := b2.readType("", "relay.presence"); m["data"] != "live" {
		t.Fatalf("after the replay got %v, want the live message", m)
	}
}
