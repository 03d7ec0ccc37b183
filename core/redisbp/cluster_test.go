package redisbp_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

// Three relay instances on one Redis behave as one relay.
func TestInstancesBehaveAsOne(t *testing.T) {
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 3, redisbp.Options{})
	a, b, c := nodes[0], nodes[1], nodes[2]

	// h5 on A and miniapp on B find each other.
	h5, _ := v1(t, a, "pair", "h5")
	mini, hello := v1(t, b, "pair", "miniapp")
	if peers := hello["peers"].([]any); len(peers) != 1 || peers[0] != "h5" {
		t.Fatalf("miniapp's peers %v, want [h5] (on another instance)", peers)
	}
	if d := data(h5.readType("relay.presence")); d["env"] != "miniapp" || d["online"] != true {
		t.Fatalf("h5 heard %v", d)
	}

	// Messages both ways, with acks and seqs from the one token order.
	h5.send(`{"type":"addMaterial","data":{"id":1,"name":"<a>"},"id":"c-1"}`)
	got := mini.readType("addMaterial")
	if got["from"] != "h5" || got["id"] != "c-1" || data(got)["name"] != "<a>" {
		t.Fatalf("miniapp got %v", got)
	}
	ack := data(h5.readType("relay.ack"))
	if ack["id"] != "c-1" || ack["seq"] != got["seq"] {
		t.Fatalf("ack %v for forwarded seq %v", ack, got["seq"])
	}
	mini.send(`{"type":"init","data":"hi"}`)
	back := h5.readType("init")
	if back["from"] != "miniapp" || back["seq"].(float64) != got["seq"].(float64)+1 {
		t.Fatalf("h5 got %v after seq %v", back, got["seq"])
	}

	// A second h5 on C replaces the one on A: close 4502 there, the
	// messages go to C, and miniapp hears nothing of it.
	h5c, hello := v1(t, c, "pair", "h5")
	if peers := hello["peers"].([]any); len(peers) != 1 || peers[0] != "miniapp" {
		t.Fatalf("new h5's peers %v", peers)
	}
	h5.expectClose(4502)
	mini.send(`{"type":"afterReplace","data":2}`)
	if m := h5c.readType("afterReplace"); m["from"] != "miniapp" {
		t.Fatalf("h5 on C got %v", m)
	}
	h5c.send(`{"type":"fromC","data":3}`)
	if m := mini.readJSON(); m["type"] != "fromC" {
		t.Fatalf("miniapp's next frame is %v: a replacement must not show as presence", m)
	}

	// miniapp leaving is heard on C; coming back (on A) too.
	_ = mini.conn.Close()
	if d := data(h5c.readType("relay.presence")); d["env"] != "miniapp" || d["online"] != false {
		t.Fatalf("h5 heard %v, want miniapp offline", d)
	}
	mini2, _ := v1(t, a, "pair", "miniapp")
	if d := data(h5c.readType("relay.presence")); d["env"] != "miniapp" || d["online"] != true {
		t.Fatalf("h5 heard %v, want miniapp online", d)
	}
	h5c.send(`{"type":"again"}`)
	if m := mini2.readType("again"); m["from"] != "h5" {
		t.Fatalf("miniapp on A got %v", m)
	}

	// Tokens stay apart across instances.
	other, _ := v1(t, b, "other", "miniapp")
	h5c.send(`{"type":"private"}`)
	mini2.readType("private")
	if text, err := other.tryRead(150 * time.Millisecond); err == nil {
		t.Fatalf("another token's client got %s", text)
	}
}

// A client that reconnects with since to another instance gets what it
// missed from the shared history.
func TestResumeOnAnotherInstance(t *testing.T) {
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 2, redisbp.Options{})
	h5, _ := v1(t, nodes[0], "res", "h5")
	mini, _ := v1(t, nodes[1], "res", "miniapp")
	h5.readType("relay.presence")
	h5.send(`{"type":"n","data":0}`)
	last := mini.readType("n")["seq"].(float64)
	_ = mini.conn.Close()
	h5.readType("relay.presence")
	for i := 1; i <= 5; i++ {
		h5.send(fmt.Sprintf(`{"type":"n","data":%d}`, i))
	}
	time.Sleep(50 * time.Millisecond)
	back := dial(t, nodes[0].url, fmt.Sprintf("v=1&token=res&env=miniapp&since=%d", int64(last)))
	if hello := back.readJSON(); hello["type"] != "relay.hello" || data(hello)["resumed"] != true {
		t.Fatalf("hello %v, want resumed", hello)
	}
	for i := 1; i <= 5; i++ {
		m := back.readType("n")
		if m["data"] != float64(i) || m["seq"].(float64) != last+float64(i) {
			t.Fatalf("replay %d: %v", i, m)
		}
	}
	h5.send(`{"type":"live"}`)
	if m := back.readJSON(); m["type"] != "live" {
		t.Fatalf("after the replay: %v", m)
	}
}

// When an instance dies, the other instances announce its sessions' envs
// offline once their claims expire.
func TestPresenceAfterInstanceDeath(t *testing.T) {
	redis := redistest.Start(t)
	opts := redisbp.Options{ClaimTTL: time.Second, RefreshInterval: 250 * time.Millisecond}
	nodes := cluster(t, redis, 2, opts)
	h5, _ := v1(t, nodes[0], "gone", "h5")
	mini, hello := v1(t, nodes[1], "gone", "miniapp")
	if peers := hello["peers"].([]any); len(peers) != 1 || peers[0] != "h5" {
		t.Fatalf("peers %v", peers)
	}
	h5.readType("relay.presence")
	// Alive for several claim TTLs: still online.
	time.Sleep(3 * opts.ClaimTTL)
	h5.send(`{"type":"still"}`)
	mini.readType("still")
	diedAt := time.Now()
	nodes[0].kill()
	d := data(mini.readType("relay.presence"))
	if d["env"] != "h5" || d["online"] != false {
		t.Fatalf("miniapp heard %v, want h5 offline", d)
	}
	took := time.Since(diedAt)
	t.Logf("h5 announced offline %v after its instance died (claim TTL %v, refresh %v)", took.Round(time.Millisecond), opts.ClaimTTL, opts.RefreshInterval)
	if took > opts.ClaimTTL+2*opts.RefreshInterval+time.Second {
		t.Fatalf("offline took %v", took)
	}
}
