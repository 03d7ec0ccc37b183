package redisbp_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

// Redis hangs for 6 s (SIGSTOP) while a client sends a message with an id
// every 20 ms. A message answered unavailable is never relayed, also not
// when Redis resumes and runs the calls that waited in it; a message
// answered unconfirmed may have been, and resending it with its id
// relays it exactly once in every case.
func TestUnavailableMeansNeverRelayed(t *testing.T) {
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 2, redisbp.Options{}) // the production timeouts: op 2 s, health 1 s
	mini, _ := v1(t, nodes[1], "definite", "miniapp")
	h5, _ := v1(t, nodes[0], "definite", "h5")
	mini.readType("relay.presence")
	h5.send(`{"type":"d","id":"warm"}`)
	h5.readType("relay.ack")
	mini.readType("d")

	// The peer's reader records every id it gets, to the end.
	var mu sync.Mutex
	got := map[string]int{}
	barrier := make(chan struct{})
	go func() {
		for {
			_ = mini.conn.SetReadDeadline(time.Now().Add(time.Minute))
			var m map[string]any
			if err := mini.conn.ReadJSON(&m); err != nil {
				return
			}
			id, _ := m["id"].(string)
			mu.Lock()
			got[id]++
			mu.Unlock()
			if id == "barrier" {
				close(barrier)
				return
			}
		}
	}()
	// h5's answers, by id.
	answers := make(chan map[string]any, 1024)
	go func() {
		for {
			_ = h5.conn.SetReadDeadline(time.Now().Add(time.Minute))
			var m map[string]any
			if err := h5.conn.ReadJSON(&m); err != nil {
				close(answers)
				return
			}
			answers <- m
		}
	}()

	redis.Pause()
	resumed := false
	defer func() {
		if !resumed {
			redis.Resume()
		}
	}()
	const sent = 300 // 6 s at one per 20 ms
	start := time.Now()
	for i := 0; i < sent; i++ {
		h5.send(fmt.Sprintf(`{"type":"d","data":%d,"id":"d-%d"}`, i, i))
		time.Sleep(time.Until(start.Add(time.Duration(i+1) * 20 * time.Millisecond)))
	}
	outcome := map[string]string{}
	for len(outcome) < sent {
		m, ok := <-answers
		if !ok {
			t.Fatalf("h5's connection ended after %d answers", len(outcome))
		}
		d := data(m)
		id, _ := d["id"].(string)
		switch {
		case m["type"] == "relay.error":
			outcome[id], _ = d["code"].(string)
		case m["type"] == "relay.ack":
			outcome[id] = "ack" // accepted before Redis stopped answering
		default:
			t.Fatalf("h5 got %v", m)
		}
	}
	redis.Resume()
	resumed = true
	for _, n := range nodes {
		waitFor(t, n.name+" ready again", 10*time.Second, n.bp.Ready)
	}
	count := map[string]int{}
	var unconfirmed []string
	for i := 0; i < sent; i++ {
		id := fmt.Sprintf("d-%d", i)
		count[outcome[id]]++
		if outcome[id] == "unconfirmed" {
			unconfirmed = append(unconfirmed, id)
		}
	}
	t.Logf("answers while Redis hung: %v", count)
	if count["unavailable"] == 0 || count["unconfirmed"] == 0 || count["unavailable"]+count["unconfirmed"]+count["ack"] != sent {
		t.Fatalf("answers %v: want both unavailable (refused unsent once Redis was seen gone) and unconfirmed (sent to the hung Redis), nothing else", count)
	}
	// What was unconfirmed is resent with its id, then a barrier: once the
	// peer has the barrier, whatever Redis ran when it resumed was relayed
	// long before.
	for _, id := range unconfirmed {
		h5.send(fmt.Sprintf(`{"type":"d","data":%q,"id":%q}`, "again", id))
	}
	h5.send(`{"type":"d","id":"barrier"}`)
	for acked := 0; acked < len(unconfirmed)+1; {
		m, ok := <-answers
		if !ok {
			t.Fatal("h5's connection ended")
		}
		if m["type"] != "relay.ack" {
			t.Fatalf("answer to a resend after Redis came back: %v", m)
		}
		acked++
	}
	select {
	case <-barrier:
	case <-time.After(10 * time.Second):
		t.Fatal("the barrier never reached the peer")
	}
	mu.Lock()
	defer mu.Unlock()
	var wrong []string
	for i := 0; i < sent; i++ {
		id := fmt.Sprintf("d-%d", i)
		switch n := got[id]; outcome[id] {
		case "unavailable":
			if n != 0 {
				wrong = append(wrong, fmt.Sprintf("%s answered unavailable, relayed %d times", id, n))
			}
		default: // ack, or unconfirmed and resent
			if n != 1 {
				wrong = append(wrong, fmt.Sprintf("%s answered %s, relayed %d times", id, outcome[id], n))
			}
		}
	}
	if len(wrong) > 0 {
		t.Fatalf("%d wrong outcomes:\n%s", len(wrong), strings.Join(wrong, "\n"))
	}
}
