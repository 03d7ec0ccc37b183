package core

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
)

func seqOf(m map[string]any) uint64 { return uint64(m["seq"].(float64)) }

func TestResumeReplaysWhatWasMissedThenLive(t *testing.T) {
	r := startRelay(t)
	h5, _ := r.v1("res", "h5")
	mini, _ := r.v1("res", "miniapp")
	h5.readType("relay.presence")
	h5.send(`{"type":"n","data":0}`)
	last := seqOf(mini.readType("n"))
	_ = mini.conn.Close()
	h5.readType("relay.presence") // miniapp offline

	// Sent while miniapp is away: held for it, including seed senders' text.
	for i := 1; i <= 4; i++ {
		h5.sendJSON(map[string]any{"type": "n", "data": i, "to": []string{"miniapp"}})
	}
	seed := r.dial("token=res&env=pc")
	time.Sleep(30 * time.Millisecond)
	seed.send(`{"type":"n","data":5}`)
	h5.readType("n", "relay.presence")

	back := r.dial(fmt.Sprintf("v=1&token=res&env=miniapp&since=%d", last))
	hello := back.readJSON()
	if hello["type"] != "relay.hello" || hello["data"].(map[string]any)["resumed"] != true {
		t.Fatalf("hello = %v, want resumed:true", hello)
	}
	prev := last
	for i := 1; i <= 5; i++ {
		m := back.readType("n")
		if m["data"] != float64(i) || seqOf(m) <= prev {
			t.Fatalf("replay %d: %v (previous seq %d)", i, m, prev)
		}
		prev = seqOf(m)
	}
	// Each once and nothing more: the next frame is live traffic.
	h5.send(`{"type":"live"}`)
	if m := back.readJSON(); m["type"] != "live" || seqOf(m) <= prev {
		t.Fatalf("after the replay got %v", m)
	}
}

func TestResumeBeyondTheWindowSaysResumedFalse(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.History.Size = 3 })
	h5, _ := r.v1("win", "h5")
	mini, _ := r.v1("win", "miniapp")
	h5.send(`{"type":"n","data":0}`)
	last := seqOf(mini.readType("n"))
	_ = mini.conn.Close()
	for i := 1; i <= 10; i++ {
		h5.sendJSON(map[string]any{"type": "n", "data": i})
	}
	h5.send(`{"type":"relay.ping"}`)
	h5.readType("relay.pong", "relay.presence")

	back := r.dial(fmt.Sprintf("v=1&token=win&env=miniapp&since=%d", last))
	hello := back.readJSON()["data"].(map[string]any)
	if hello["resumed"] != false || uint64(hello["seq"].(float64)) <= last {
		t.Fatalf("hello = %v, want resumed:false with the newest seq", hello)
	}
	// Nothing partial is replayed; live traffic continues after hello.seq.
	h5.send(`{"type":"live"}`)
	if m := back.readJSON(); m["type"] != "live" {
		t.Fatalf("after resumed:false got %v, want live traffic only", m)
	}
}

func TestRepeatedClientIDIsAckedNotRelayed(t *testing.T) {
	r := startRelay(t)
	h5, _ := r.v1("dup", "h5")
	mini, _ := r.v1("dup", "miniapp")
	h5.readType("relay.presence")
	h5.send(`{"type":"x","data":1,"id":"c-1"}`)
	first := h5.readType("relay.ack")["data"].(map[string]any)
	h5.send(`{"type":"x","data":1,"id":"c-1"}`)
	second := h5.readType("relay.ack")["data"].(map[string]any)
	if first["seq"] != second["seq"] {
		t.Fatalf("acks %v and %v: a repeat must be acked with the original seq", first, second)
	}
	mini.readType("x")
	mini.expectSilence(150 * time.Millisecond)
}

func TestPresenceOnJoinAndLeaveButNotReplacement(t *testing.T) {
	r := startRelay(t)
	h5, _ := r.v1("pres", "h5")
	mini, hello := r.v1("pres", "miniapp")
	if peers := hello["peers"].([]any); len(peers) != 1 {
		t.Fatalf("peers %v", peers)
	}
	if d := h5.readType("relay.presence")["data"].(map[string]any); d["env"] != "miniapp" || d["online"] != true {
		t.Fatalf("join presence %v", d)
	}
	r.v1("pres", "miniapp") // replacement: no presence change
	h5.expectSilence(150 * time.Millisecond)
	_ = mini.conn.Close() // the replaced one going away is no change either
	h5.expectSilence(150 * time.Millisecond)
}

func TestPresenceLeave(t *testing.T) {
	r := startRelay(t)
	h5, _ := r.v1("pres2", "h5")
	mini, _ := r.v1("pres2", "miniapp")
	h5.readType("relay.presence")
	_ = mini.conn.Close()
	if d := h5.readType("relay.presence")["data"].(map[string]any); d["env"] != "miniapp" || d["online"] != false {
		t.Fatalf("leave presence %v", d)
	}
}

// With routes, a repeated id is caught before the routes run again.
func TestRepeatedClientIDThroughRoutes(t *testing.T) {
	r := startRelay(t)
	r.srv.hub.SetPipeline(pipelineFrom(t, "routes: [{match: {type: x}, handlers: [{handler: test-step, mode: retype}]}]"))
	h5, _ := r.v1("dup-routes", "h5")
	mini, _ := r.v1("dup-routes", "miniapp")
	h5.readType("relay.presence")
	h5.send(`{"type":"x","id":"c-1"}`)
	first := h5.readType("relay.ack")["data"].(map[string]any)
	h5.send(`{"type":"x","id":"c-1"}`)
	second := h5.readType("relay.ack")["data"].(map[string]any)
	if first["seq"] != second["seq"] {
		t.Fatalf("acks %v and %v", first, second)
	}
	if got := mini.readType("retyped"); got["id"] != "c-1" {
		t.Fatalf("peer got %v", got)
	}
	mini.expectSilence(150 * time.Millisecond)
}

// A gap many times the send queue is replayed a page at a time as the
// client reads, while the peer keeps sending: every message arrives once,
// in order, and the session is never closed as a slow consumer (before
// paging, the whole replay was queued at once and overflowed into 4008 on
// every retry).
func TestResumeFarLargerThanTheSendQueue(t *testing.T) {
	const missed, live = 3000, 1500
	r := startRelay(t, func(c *config.Config) {
		c.History.Size = 20000
		c.Limits.SendQueue = 16
		c.Limits.MessagesPerSecond = 0
	})
	h5, _ := r.v1("gap", "h5")
	mini, _ := r.v1("gap", "miniapp")
	h5.send(`{"type":"n","data":-1,"id":"first"}`)
	h5.readType("relay.ack", "relay.presence")
	last := seqOf(mini.readType("n"))
	_ = mini.conn.Close()
	for i := 0; i < missed; i++ {
		h5.send(fmt.Sprintf(`{"type":"n","data":%d}`, i))
	}
	h5.send(`{"type":"sync","id":"missed"}`)
	h5.readType("relay.ack", "relay.presence")

	back := r.dial(fmt.Sprintf("v=1&token=gap&env=miniapp&since=%d", last))
	// Live traffic while the replay runs; the client starts reading late,
	// so the queue fills and the replay has to wait for the writer. Live
	// messages stay within the queue of what the client read: once caught
	// up, a sender outrunning a 16-frame queue makes a slow consumer.
	var got atomic.Int64
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := missed; i < missed+live; i++ {
			for wait := time.Now(); int64(i)-got.Load() > 8 && time.Since(wait) < 10*time.Second; {
				time.Sleep(time.Millisecond)
			}
			if err := h5.conn.WriteMessage(fws.TextMessage, []byte(fmt.Sprintf(`{"type":"n","data":%d}`, i))); err != nil {
				t.Errorf("live send %d: %v", i, err)
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	hello := back.readJSON()
	if hello["type"] != "relay.hello" || hello["data"].(map[string]any)["resumed"] != true {
		t.Fatalf("hello = %v, want resumed:true", hello)
	}
	prev := last
	for want := 0; want < missed+live; want++ {
		m := back.readType("n", "sync", "relay.presence")
		got.Add(1)
		if m["data"] != float64(want) || seqOf(m) <= prev {
			t.Fatalf("message %d: got %v (previous seq %d)", want, m, prev)
		}
		prev = seqOf(m)
	}
	<-sent
	h5.send(`{"type":"end"}`)
	if m := back.readJSON(); m["type"] != "end" || seqOf(m) <= prev {
		t.Fatalf("after the replay got %v", m)
	}
}
