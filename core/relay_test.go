package core

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
)

func TestPairExchangesBothWaysAndTokensStayApart(t *testing.T) {
	r := startRelay(t)
	h5, _ := r.v1("tok-A", "h5")
	mini, hello := r.v1("tok-A", "miniapp")
	if peers := hello["peers"].([]any); len(peers) != 1 || peers[0] != "h5" {
		t.Fatalf("miniapp hello peers = %v, want [h5]", peers)
	}
	other, _ := r.v1("tok-B", "miniapp")

	presence := h5.readType("relay.presence")
	if d := presence["data"].(map[string]any); d["env"] != "miniapp" || d["online"] != true {
		t.Fatalf("presence = %v", d)
	}

	h5.send(`{"type":"addMaterial","data":{"id":1,"name":"a"},"id":"c-1"}`)
	got := mini.readType("addMaterial")
	if got["from"] != "h5" || got["id"] != "c-1" || got["seq"].(float64) < 1 || got["ts"].(float64) <= 0 {
		t.Fatalf("forwarded envelope = %v", got)
	}
	if d := got["data"].(map[string]any); d["name"] != "a" {
		t.Fatalf("data = %v", d)
	}
	ack := h5.readType("relay.ack")
	if d := ack["data"].(map[string]any); d["id"] != "c-1" || d["seq"] != got["seq"] {
		t.Fatalf("ack = %v, forwarded seq %v", d, got["seq"])
	}

	mini.send(`{"type":"init","data":"hi"}`)
	back := h5.readType("init")
	if back["from"] != "miniapp" || back["seq"].(float64) <= got["seq"].(float64) {
		t.Fatalf("reply = %v; seq must grow past %v", back, got["seq"])
	}
	mini.expectSilence(100 * time.Millisecond) // never echoed to the sender
	other.expectSilence(100 * time.Millisecond)
}

func TestToAddressesOnlyNamedEnvs(t *testing.T) {
	r := startRelay(t)
	h5, _ := r.v1("tok", "h5")
	mini, _ := r.v1("tok", "miniapp")
	pc, _ := r.v1("tok", "pc")
	h5.send(`{"type":"x","to":["pc"]}`)
	if got := pc.readType("x", "relay.presence"); got["from"] != "h5" {
		t.Fatalf("pc got %v", got)
	}
	for {
		text, err := mini.tryRead(150 * time.Millisecond)
		if err != nil {
			break
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(text), &m)
		if m["type"] != "relay.presence" {
			t.Fatalf("miniapp was not addressed but got %s", text)
		}
	}
}

func TestNewerConnectionReplacesOlder(t *testing.T) {
	r := startRelay(t)
	first, _ := r.v1("tok", "h5")
	mini, _ := r.v1("tok", "miniapp")
	first.readType("relay.presence")
	second, hello := r.v1("tok", "h5")
	if peers := hello["peers"].([]any); len(peers) != 1 || peers[0] != "miniapp" {
		t.Fatalf("peers = %v", peers)
	}
	first.expectClose(CloseReplaced)

	mini.send(`{"type":"ping-app","data":1}`)
	if got := second.readType("ping-app"); got["from"] != "miniapp" {
		t.Fatalf("new h5 got %v", got)
	}
	// A replacement is no change of presence.
	mini.expectSilence(150 * time.Millisecond)
}

func TestDuplicateRejectKeepsTheFirst(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.OnDuplicate = config.DuplicateReject })
	first, _ := r.v1("tok", "h5")
	second := r.dial("v=1&token=tok&env=h5")
	second.expectClose(CloseDuplicateEnv)
	mini, _ := r.v1("tok", "miniapp")
	mini.send(`{"type":"t"}`)
	first.readType("t", "relay.presence")
}

func TestEnvAllowListAndTokenCap(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.Envs = map[string]config.Env{"h5": {}, "miniapp": {}, "pc": {}}
		c.Limits.MaxConnectionsPerToken = 2
	})
	r.dial("v=1&token=tok&env=tv").expectClose(CloseEnvNotAllowed)
	r.v1("tok", "h5")
	r.v1("tok", "miniapp")
	r.dial("v=1&token=tok&env=pc").expectClose(CloseTokenFull)
	// Replacing an env already connected is not a third connection.
	r.v1("tok", "h5")
}

func TestRelayPingGetsPong(t *testing.T) {
	r := startRelay(t)
	c, hello := r.v1("tok", "miniapp")
	if hello["heartbeat"].(float64) != 25000 {
		t.Fatalf("hello heartbeat = %v", hello["heartbeat"])
	}
	limits := hello["limits"].(map[string]any)
	if limits["messagesPerSecond"] != float64(100) || limits["burst"] != float64(200) || limits["maxFrameBytes"] != float64(65536) {
		t.Fatalf("hello limits = %v", limits)
	}
	c.send(`{"type":"relay.ping"}`)
	if got := c.readJSON(); got["type"] != "relay.pong" {
		t.Fatalf("got %v, want relay.pong", got)
	}
}

func TestHeartbeatPingsAndDropsDeadPeers(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.Heartbeat.Interval = 50 * time.Millisecond
		c.Heartbeat.Timeout = 300 * time.Millisecond
	})
	live, _ := r.v1("tok", "h5")
	pings := make(chan struct{}, 16)
	live.conn.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return live.conn.WriteControl(9+1, []byte(data), time.Now().Add(time.Second)) // pong
	})
	go func() {
		for {
			if _, _, err := live.conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	select {
	case <-pings:
	case <-time.After(5 * time.Second):
		t.Fatal("no protocol ping within 5s")
	}

	// A client that never reads answers no ping and sends nothing: after
	// the timeout the relay must give up on it and report it offline.
	r.dial("v=1&token=tok2&env=h5")
	watcher, _ := r.v1("tok2", "miniapp")
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := watcher.readJSON()
		if m["type"] == "relay.presence" && m["data"].(map[string]any)["online"] == false {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("dead peer never reported offline")
		}
	}
	// The live client kept answering pings and is still there.
	// The dead one's handler finishes just after its offline presence.
	eventually(t, "2 open sessions (live h5 and the watcher)", func() bool { return r.srv.hub.open.Load() == 2 })
}

// Messages outlive their sender's session in the history: what they keep of
// its upgrade request (token, env) must not change when the server reuses
// that request's buffers for later connections.
func TestHistoryKeepsSenderIdentityAfterTheSenderLeft(t *testing.T) {
	r := startRelay(t)
	for i := 0; i < 20; i++ {
		token := fmt.Sprintf("keep-%02d", i)
		a, _ := r.v1(token, "sender")
		a.sendJSON(map[string]any{"type": "t", "data": i, "id": "x"})
		a.readType("relay.ack")
		_ = a.conn.Close()
	}
	// Other connections come and go, reusing the servers' request buffers.
	for i := 0; i < 50; i++ {
		c, _ := r.v1(fmt.Sprintf("zzzzzzzz-other-%d", i), "yyyyyyyyyyyy")
		_ = c.conn.Close()
	}
	for i := 0; i < 20; i++ {
		b := r.dial(fmt.Sprintf("v=1&token=keep-%02d&env=receiver&since=0", i))
		if hello := b.readType("relay.hello"); hello["data"].(map[string]any)["resumed"] != true {
			t.Fatalf("token %d: %v", i, hello)
		}
		got := b.readType("t")
		if got["from"] != "sender" || got["data"] != float64(i) || got["id"] != "x" {
			t.Fatalf("token %d replayed %v", i, got)
		}
	}
}
