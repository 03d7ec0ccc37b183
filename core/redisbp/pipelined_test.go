package redisbp_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

// A sender that does not wait for acks has many messages in flight over
// Redis (published a queue at a time): every one is acked in order with
// increasing seqs, and the peer on the other instance gets every one once,
// in order, with the acked seq.
func TestPipelinedSenderAcrossInstances(t *testing.T) {
	const total = 1500
	redis := redistest.Start(t)
	// The peer may read slower than the sender sends (under -race): its
	// send queue holds everything rather than closing it as a slow consumer.
	nodes := cluster(t, redis, 2, redisbp.Options{}, func(c *config.Config) {
		c.History.Size = 4 * total
		c.Limits.SendQueue = 4 * total
	})
	mini, _ := v1(t, nodes[1], "pipelined", "miniapp")
	h5, _ := v1(t, nodes[0], "pipelined", "h5")
	received := make(chan error, 1)
	var seqs [total]float64
	go func() {
		for i := 0; i < total; {
			m, err := readJSONErr(mini)
			if err != nil {
				received <- fmt.Errorf("peer after %d messages: %v", i, err)
				return
			}
			if m["type"] == "relay.presence" {
				continue
			}
			if m["type"] != "p" || m["id"] != "p-"+strconv.Itoa(i) || m["data"] != float64(i) {
				received <- fmt.Errorf("peer message %d: %v", i, m)
				return
			}
			seqs[i] = m["seq"].(float64)
			i++
		}
		received <- nil
	}()
	go func() {
		for i := 0; i < total; i++ {
			if err := h5.conn.WriteMessage(1, []byte(fmt.Sprintf(`{"type":"p","data":%d,"id":"p-%d"}`, i, i))); err != nil {
				return
			}
		}
	}()
	var last float64
	acks := make([]float64, total)
	for i := 0; i < total; i++ {
		ack := h5.readJSON()
		d := data(ack)
		if ack["type"] != "relay.ack" || d["id"] != "p-"+strconv.Itoa(i) {
			t.Fatalf("answer %d: %v, want the ack of p-%d", i, ack, i)
		}
		seq := d["seq"].(float64)
		if seq <= last {
			t.Fatalf("ack of p-%d has seq %v after %v", i, seq, last)
		}
		last, acks[i] = seq, seq
	}
	if err := <-received; err != nil {
		t.Fatal(err)
	}
	for i := range acks {
		if seqs[i] != acks[i] {
			t.Fatalf("p-%d arrived with seq %v, acked with %v", i, seqs[i], acks[i])
		}
	}
	if s, err := mini.tryRead(100 * time.Millisecond); err == nil {
		t.Fatalf("peer got more than was sent: %s", s)
	}
}

// A client that repeats each message at once (a resend racing its ack)
// gets both acked with one seq, whether or not the repeat is published
// in the same call as the original, and the peer gets each once.
func TestRepeatInFlightIsAckedWithTheOriginalSeq(t *testing.T) {
	const rounds = 200
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 2, redisbp.Options{}, func(c *config.Config) { c.Limits.SendQueue = 4 * rounds })
	mini, _ := v1(t, nodes[1], "repeat", "miniapp")
	h5, _ := v1(t, nodes[0], "repeat", "h5")
	mini.readType("relay.presence")
	go func() {
		for i := 0; i < rounds; i++ {
			f := fmt.Sprintf(`{"type":"r","data":%d,"id":"r-%d"}`, i, i)
			if h5.conn.WriteMessage(1, []byte(f)) != nil || h5.conn.WriteMessage(1, []byte(f)) != nil {
				return
			}
		}
	}()
	var last float64
	for i := 0; i < rounds; i++ {
		var seq [2]float64
		for k := range seq {
			ack := h5.readJSON()
			if ack["type"] != "relay.ack" || data(ack)["id"] != "r-"+strconv.Itoa(i) {
				t.Fatalf("answer %d of r-%d: %v", k, i, ack)
			}
			seq[k] = data(ack)["seq"].(float64)
		}
		if seq[0] != seq[1] || seq[0] <= last {
			t.Fatalf("r-%d acked with seqs %v, previous %v", i, seq, last)
		}
		last = seq[0]
	}
	for i := 0; i < rounds; i++ {
		if m := mini.readJSON(); m["id"] != "r-"+strconv.Itoa(i) {
			t.Fatalf("peer message %d: %v", i, m)
		}
	}
	if s, err := mini.tryRead(100 * time.Millisecond); err == nil {
		t.Fatalf("peer got a repeat: %s", s)
	}
}

// Messages queued while Redis hangs are refused, each in order, with
// unconfirmed (a call sent to the hung Redis) or unavailable (refused
// unsent once the health check saw Redis gone); the session stays up and,
// once Redis answers, resends are acked (one that was accepted after all
// is acked as a repeat) and new messages relayed in order, none twice.
func TestRedisPausedWhileMessagesQueued(t *testing.T) {
	const queued, after = 30, 30
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 2, redisbp.Options{OpTimeout: 300 * time.Millisecond, HealthInterval: 100 * time.Millisecond})
	mini, _ := v1(t, nodes[1], "paused", "miniapp")
	h5, _ := v1(t, nodes[0], "paused", "h5")
	mini.readType("relay.presence")
	h5.send(`{"type":"q","id":"warm"}`)
	h5.readType("relay.ack")
	mini.readType("q")

	redis.Pause()
	resumed := false
	defer func() {
		if !resumed {
			redis.Resume()
		}
	}()
	for i := 0; i < queued; i++ {
		h5.send(fmt.Sprintf(`{"type":"q","data":%d,"id":"q-%d"}`, i, i))
	}
	for i := 0; i < queued; i++ {
		e := h5.readJSON()
		if code := data(e)["code"]; e["type"] != "relay.error" || (code != "unavailable" && code != "unconfirmed") || data(e)["id"] != "q-"+strconv.Itoa(i) {
			t.Fatalf("answer %d while Redis hangs: %v, want relay.error unavailable or unconfirmed for q-%d", i, e, i)
		}
	}
	redis.Resume()
	resumed = true
	for _, n := range nodes {
		waitFor(t, n.name+" ready again", 10*time.Second, n.bp.Ready)
	}
	// The client resends what was refused, then goes on.
	for i := 0; i < queued+after; i++ {
		h5.send(fmt.Sprintf(`{"type":"q","data":%d,"id":"q-%d"}`, i, i))
	}
	var lastNew float64
	for i := 0; i < queued+after; i++ {
		ack := h5.readJSON()
		if ack["type"] != "relay.ack" || data(ack)["id"] != "q-"+strconv.Itoa(i) {
			t.Fatalf("answer %d after Redis came back: %v, want the ack of q-%d", i, ack, i)
		}
		if seq := data(ack)["seq"].(float64); i >= queued {
			if seq <= lastNew {
				t.Fatalf("q-%d acked with seq %v after %v", i, seq, lastNew)
			}
			lastNew = seq
		}
	}
	// The peer gets each id once; what was sent after the outage comes in
	// order and last.
	seen := map[string]bool{}
	for len(seen) < queued+after {
		m := mini.readJSON()
		id, _ := m["id"].(string)
		if m["type"] != "q" || seen[id] {
			t.Fatalf("peer got %v (seen before: %v)", m, seen[id])
		}
		seen[id] = true
		if n, _ := strconv.Atoi(strings.TrimPrefix(id, "q-")); n >= queued && len(seen) != n+1 {
			t.Fatalf("peer got %s as message %d", id, len(seen))
		}
	}
}

// A session that ends with messages queued (Redis hangs, its reader is
// blocked on a full queue) leaves no goroutine behind, and every message
// it read is published or counted as dropped.
func TestSessionEndingWithQueuedMessages(t *testing.T) {
	const sent = 300
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 1, redisbp.Options{OpTimeout: 200 * time.Millisecond, HealthInterval: 100 * time.Millisecond},
		func(c *config.Config) { c.History.Size = 2 * sent })
	n := nodes[0]
	h5, _ := v1(t, n, "ending", "h5")
	redis.Pause()
	resumed := false
	defer func() {
		if !resumed {
			redis.Resume()
		}
	}()
	for i := 0; i < sent; i++ {
		h5.send(fmt.Sprintf(`{"type":"e","data":%d,"id":"e-%d"}`, i, i))
	}
	waitFor(t, "the reader to take messages in", 5*time.Second, func() bool {
		return metric(t, n, `relay_messages_in_total{env="h5"}`) > 0
	})
	_ = h5.conn.Close()
	waitFor(t, "the session's goroutines to end", 20*time.Second, func() bool { return sessionGoroutines() == 0 })
	redis.Resume()
	resumed = true
	waitFor(t, "ready again", 10*time.Second, n.bp.Ready)
	read := metric(t, n, `relay_messages_in_total{env="h5"}`)
	// Unconfirmed ones may have been published; none was here (Redis runs
	// them after their deadline, and they refuse).
	dropped := metric(t, n, `relay_drops_total{reason="unavailable"}`) + metric(t, n, `relay_drops_total{reason="unconfirmed"}`)
	hist, err := n.bp.History(context.Background(), "ending", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	published := float64(len(hist.Messages))
	t.Logf("read %v, published %v, counted as dropped %v", read, published, dropped)
	if dropped == 0 || published+dropped < read {
		t.Fatalf("read %v messages, published %v and counted %v as dropped", read, published, dropped)
	}
}

// readJSONErr is readJSON for another goroutine than the test's.
func readJSONErr(c *wsClient) (map[string]any, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m map[string]any
	err := c.conn.ReadJSON(&m)
	return m, err
}

// metric reads one sample from the node's /metrics.
func metric(t testing.TB, n *node, sample string) float64 {
	t.Helper()
	u := strings.Replace(strings.Replace(n.url, "ws://", "http://", 1), "/socket", "/metrics", 1)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// sessionGoroutines counts the goroutines running session code.
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
