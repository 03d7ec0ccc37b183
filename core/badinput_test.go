package core

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
)

// stillServes proves the relay still relays for an unrelated pair.
func (r *testRelay) stillServes() {
	r.t.Helper()
	token := fmt.Sprintf("control-%d", time.Now().UnixNano())
	a, _ := r.v1(token, "h5")
	b, _ := r.v1(token, "miniapp")
	a.send(`{"type":"control"}`)
	b.readType("control")
}

func TestUpgradeRefusals(t *testing.T) {
	r := startRelay(t)
	cases := []struct {
		name, query string
		status      int
		code        string
	}{
		{"missing token", "env=h5", 400, "missing_token"},
		{"missing env", "token=t", 400, "missing_env"},
		{"bad env", "token=t&env=H5!", 400, "bad_env"},
		{"long env", "token=t&env=" + strings.Repeat("a", 33), 400, "bad_env"},
		{"long token", "token=" + strings.Repeat("x", 257) + "&env=h5", 400, "bad_token"},
		{"unknown version", "token=t&env=h5&v=2", 400, "unsupported_version"},
		{"bad since", "token=t&env=h5&since=-1", 400, "bad_since"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := r.tryDial(tc.query)
			if err == nil {
				t.Fatal("upgrade succeeded")
			}
			checkJSONError(t, c.resp, tc.status, tc.code)
		})
	}
	t.Run("upgrade lost on the way", func(t *testing.T) {
		// A plain GET without any WebSocket header is a health probe
		// (probe_test.go); this one is an attempt whose Upgrade a proxy dropped.
		req, err := http.NewRequest(http.MethodGet, r.http+"/socket?token=t&env=h5", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Version", "13")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		checkJSONError(t, resp, http.StatusUpgradeRequired, "upgrade_required")
	})
	r.stillServes()
}

func TestOriginAllowList(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Origins = []string{"https://shop.example"} })
	c, err := r.tryDial("token=t&env=h5", http.Header{"Origin": {"https://evil.example"}})
	if err == nil {
		t.Fatal("foreign origin accepted")
	}
	checkJSONError(t, c.resp, http.StatusForbidden, "origin_not_allowed")
	r.dial("token=t&env=h5", http.Header{"Origin": {"https://shop.example"}})
	r.dial("token=t&env=miniapp") // mini programs send no Origin
}

func TestAnyOriginByDefault(t *testing.T) {
	r := startRelay(t)
	r.dial("token=t&env=h5", http.Header{"Origin": {"https://some-h5-host.example"}})
}

func checkJSONError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	if resp == nil {
		t.Fatalf("no HTTP response, want %d %s", status, code)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct{ Error, Message string }
	if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || e.Error != code || e.Message == "" {
		t.Fatalf("got %d %s, want %d with error %q and a message", resp.StatusCode, body, status, code)
	}
}

func TestBadFramesGetErrorsAndConnectionStays(t *testing.T) {
	r := startRelay(t)
	c, _ := r.v1("bad", "h5")
	peer, _ := r.v1("bad", "miniapp")
	c.readType("relay.presence")
	cases := []struct{ frame, code string }{
		{`{"type":`, ErrInvalidJSON},
		{`not json at all`, ErrInvalidJSON},
		{`[1,2]`, ErrInvalidMessage},
		{`{"data":1}`, ErrInvalidMessage},
		{`{"type":""}`, ErrInvalidMessage},
		{`{"type":42}`, ErrInvalidMessage},
		{`{"type":"` + strings.Repeat("t", 129) + `"}`, ErrInvalidMessage},
		{`{"type":"x","id":"` + strings.Repeat("i", 65) + `"}`, ErrInvalidMessage},
		{`{"type":"x","to":"h5"}`, ErrInvalidMessage},
		{`{"type":"x","to":["Bad Env"]}`, ErrInvalidMessage},
		{`{"type":"relay.hello"}`, ErrReservedType},
		{"\xff\xfe", ErrInvalidUTF8},
	}
	for _, tc := range cases {
		c.send(tc.frame)
		e := c.readType("relay.error")
		d := e["data"].(map[string]any)
		if d["code"] != tc.code || d["message"] == "" || d["ref"] == "" {
			t.Errorf("frame %q: error %v, want code %s with message and ref", tc.frame, d, tc.code)
		}
	}
	if err := c.conn.WriteMessage(fws.BinaryMessage, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if d := c.readType("relay.error")["data"].(map[string]any); d["code"] != ErrBinary {
		t.Fatalf("binary frame: %v", d)
	}
	// Nothing of that reached the peer, and the connection still works.
	c.send(`{"type":"fine"}`)
	if got := peer.readType("fine"); got["from"] != "h5" {
		t.Fatalf("peer got %v", got)
	}
}

func TestOversizedFrameCloses1009(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.MaxFrameBytes = 1024 })
	c, _ := r.v1("big", "h5")
	c.send(`{"type":"x","data":"` + strings.Repeat("a", 2000) + `"}`)
	c.expectClose(CloseTooLarge)
	r.stillServes()
}

func TestRateLimitRefusesExcess(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 1
		c.Limits.Burst = 5
	})
	c, _ := r.v1("rl", "h5")
	peer, _ := r.v1("rl", "miniapp")
	c.readType("relay.presence")
	for i := 0; i < 8; i++ {
		c.sendJSON(map[string]any{"type": "n", "data": i, "id": fmt.Sprint(i)})
	}
	acked, limited := 0, 0
	for acked+limited < 8 {
		m := c.readJSON()
		switch m["type"] {
		case "relay.ack":
			acked++
		case "relay.error":
			if m["data"].(map[string]any)["code"] != ErrRateLimited {
				t.Fatalf("error %v", m)
			}
			limited++
		}
	}
	if acked != 5 || limited != 3 {
		t.Fatalf("acked %d, limited %d; want 5 and 3", acked, limited)
	}
	for i := 0; i < 5; i++ {
		if got := peer.readType("n"); got["data"] != float64(i) {
			t.Fatalf("peer got %v, want data %d in order", got, i)
		}
	}
	// Flooding far past the limit ends the connection with 4029.
	for i := 0; i < 20; i++ {
		if c.conn.WriteMessage(fws.TextMessage, []byte(`{"type":"n"}`)) != nil {
			break
		}
	}
	c.expectClose(CloseTooMany)
}

// After a rate_limited refusal, what the client sent next is held back
// (refused with the same code, naming the refused id) until that id is
// resent; then everything goes through in the order it was resent.
func TestRateLimitedMessageHoldsBackLaterOnes(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 2 // one token every 500 ms
		c.Limits.Burst = 1
	})
	c, _ := r.v1("hold", "h5")
	peer, _ := r.v1("hold", "miniapp")
	c.readType("relay.presence")
	errorFor := func(id string) map[string]any {
		t.Helper()
		m := c.readType("relay.error")
		d := m["data"].(map[string]any)
		if d["id"] != id || d["code"] != ErrRateLimited {
			t.Fatalf("got %v, want rate_limited for %s", m, id)
		}
		return d
	}
	c.send(`{"type":"n","data":"a","id":"a"}`)
	c.readType("relay.ack")
	c.send(`{"type":"n","data":"b","id":"b"}`) // the bucket is empty: refused
	errorFor("b")
	time.Sleep(600 * time.Millisecond) // the bucket refills: c alone would pass
	c.send(`{"type":"n","data":"c","id":"c"}`)
	if d := errorFor("c"); !strings.Contains(d["message"].(string), `"b"`) {
		t.Fatalf("held refusal %v does not name the refused message", d)
	}
	for _, id := range []string{"b", "c"} {
		time.Sleep(600 * time.Millisecond)
		c.send(fmt.Sprintf(`{"type":"n","data":%q,"id":%q}`, id, id))
		if m := c.readType("relay.ack"); m["data"].(map[string]any)["id"] != id {
			t.Fatalf("got %v, want the ack of %s", m, id)
		}
	}
	for _, want := range []string{"a", "b", "c"} {
		if got := peer.readType("n"); got["data"] != want {
			t.Fatalf("peer got %v, want %s in order", got, want)
		}
	}
}

func TestSlowConsumerIsCutAndMemoryStaysBounded(t *testing.T) {
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 0
		// Only the queue bound may end the slow session: under CPU
		// contention the burst can outlast the default write timeout,
		// which would cut the socket before the close frame.
		c.Limits.WriteTimeout = 2 * time.Minute
	})
	sender, _ := r.v1("slow", "h5")
	slow := r.dial("v=1&token=slow&env=miniapp") // never reads during the burst
	sender.readType("relay.presence")

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	payload := strings.Repeat("p", 4096)
	for i := 0; i < 10000; i++ {
		sender.send(`{"type":"burst","data":"` + payload + `"}`)
	}
	// The sender was never blocked and still gets answers.
	sender.send(`{"type":"relay.ping"}`)
	sender.readType("relay.pong", "relay.presence")
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	// 10k × 4 KiB = 40 MiB went to a peer that reads nothing; the relay may
	// hold at most its send queue (4 MiB by default) of it.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Fatalf("heap grew by %d MiB during the burst", grew>>20)
	}
	slow.expectClose(CloseSlowConsumer)
	if drops := counterValue(t, r, "relay_drops_total", "slow_consumer"); drops < 1 {
		t.Fatalf("slow_consumer drops = %v", drops)
	}
	r.stillServes()
}

// TestNoGoroutineLeftAfterSessionsEnd also counts sockets: fasthttp leaves
// upgraded connections to the session to close (KeepHijackedConns).
func TestNoGoroutineLeftAfterSessionsEnd(t *testing.T) {
	r := startRelay(t, func(cfg *config.Config) { cfg.Limits.MaxConnectionsPerToken = 2 })
	eventually(t, "control sessions to end", func() bool { return r.srv.hub.open.Load() == 0 })
	fdsBefore := openFiles(t)
	var clients []*client
	for i := 0; i < 50; i++ {
		a, _ := r.v1(fmt.Sprint("leak-", i), "h5")
		b, _ := r.v1(fmt.Sprint("leak-", i), "miniapp")
		a.send(`{"type":"x"}`)
		b.readType("x")
		clients = append(clients, a, b)
	}
	if n := sessionGoroutines(); n < 100 {
		t.Fatalf("only %d session goroutines seen with 100 sessions open", n)
	}
	// Sessions the relay ends itself: replaced ones and refused ones.
	for i := 0; i < 10; i++ {
		c, _ := r.v1(fmt.Sprint("leak-", i), "h5")
		clients[2*i].expectClose(CloseReplaced)
		clients = append(clients, c)
	}
	for i := 0; i < 10; i++ {
		refused := r.dial(fmt.Sprintf("token=leak-%d&env=third&v=1", i))
		refused.expectClose(CloseTokenFull)
		refused.expectHangup()
		clients = append(clients, refused)
	}
	for _, c := range clients {
		_ = c.conn.Close()
	}
	eventually(t, "sessions to end", func() bool { return r.srv.hub.open.Load() == 0 })
	// fasthttp keeps idle workers around for a while, so count the
	// goroutines that run session code rather than all of them.
	eventually(t, "session goroutines to end", func() bool { return sessionGoroutines() == 0 })
	// The clients' sockets are closed too, so the count returns to where it
	// was; a session that forgets its socket leaves one behind.
	eventually(t, "sockets to be closed", func() bool { return openFiles(t) <= fdsBefore })
}

// openFiles counts this process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

func sessionGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "relay/core.(*Session)") || strings.Contains(g, "relay/core.(*Server).runSession") {
			n++
		}
	}
	return n
}

func counterValue(t *testing.T, r *testRelay, name, label string) float64 {
	t.Helper()
	families, err := r.srv.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// A client that sends as fast as it can and reads every answer is no slow
// consumer, even with a tiny send queue: when its acks fill the queue the
// relay stops reading from it until the writer catches up, instead of
// closing it with 4008.
func TestFastSenderReadingItsAcksIsNotASlowConsumer(t *testing.T) {
	const total = 5000
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 0
		c.Limits.SendQueue = 2
	})
	c, _ := r.v1("acks", "h5")
	acked := make(chan error, 1)
	go func() {
		n := 0
		for n < total {
			_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, b, err := c.conn.ReadMessage()
			if err != nil {
				acked <- fmt.Errorf("after %d acks: %w", n, err)
				return
			}
			if strings.Contains(string(b), `"relay.ack"`) {
				n++
			}
		}
		acked <- nil
	}()
	for i := 0; i < total; i++ {
		if err := c.conn.WriteMessage(fws.TextMessage, []byte(fmt.Sprintf(`{"type":"n","id":"%d"}`, i))); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
}
