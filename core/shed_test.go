package core

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
)

// Receivers that do not read make the relay queue for them; past the
// budget of all queues together the ones holding the most are closed with
// 4008, the total stays bounded, and a pair that reads keeps exchanging.
func TestQueueBudgetShedsTheSlowestConsumers(t *testing.T) {
	const budget = 8 << 20
	r := startRelay(t, func(c *config.Config) {
		c.History.Size = 0
		c.Limits.MessagesPerSecond = 0
		c.Limits.SendQueue = 1 << 20
		c.Limits.SendQueueBytes = 256 << 20 // each session alone would hold far more than the budget
	})
	r.srv.hub.queues.limit.Store(budget)

	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			peak.Store(max(peak.Load(), r.srv.hub.queues.bytes.Load()))
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()

	fastA, _ := r.v1("fast", "h5")
	fastB, _ := r.v1("fast", "miniapp")
	fastA.readType("relay.presence")

	const slowPairs = 4
	frame := []byte(`{"type":"blob","data":"` + strings.Repeat("x", 60_000) + `"}`)
	var receivers []*client
	var wg sync.WaitGroup
	for i := 0; i < slowPairs; i++ {
		token := fmt.Sprintf("slow-%d", i)
		sender, _ := r.v1(token, "h5")
		receiver, _ := r.v1(token, "miniapp") // never reads from here on
		receivers = append(receivers, receiver)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 400; j++ {
				if err := sender.conn.WriteMessage(fws.TextMessage, frame); err != nil {
					return
				}
			}
		}()
	}
	// The pair that reads keeps working while the others pile up.
	for i := 0; i < 20; i++ {
		fastA.sendJSON(map[string]any{"type": "ping.me", "data": i})
		if m := fastB.readType("ping.me"); m["data"].(float64) != float64(i) {
			t.Fatalf("fast pair got %v", m)
		}
	}
	wg.Wait()
	eventually(t, "a slow consumer shed", func() bool { return r.srv.hub.queues.shed.Load() > 0 })
	close(stop)
	<-sampled
	if p := peak.Load(); p > budget+budget/2+int64(len(frame)) {
		t.Fatalf("queues held %d bytes at their peak, budget %d", p, budget)
	}
	// A shed receiver gets 4008 after what was being written to it, or,
	// when it does not read that within closeGrace, a cut connection.
	ended := 0
	for _, c := range receivers {
		for {
			_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, _, err := c.conn.ReadMessage(); err != nil {
				if ce, ok := err.(*fws.CloseError); ok && (ce.Code == CloseSlowConsumer || ce.Code == fws.CloseAbnormalClosure) {
					ended++
				}
				break
			}
		}
	}
	shed := r.srv.hub.queues.shed.Load()
	t.Logf("queues peaked at %d bytes (budget %d); %d of %d slow receivers closed; shed counter %d",
		peak.Load(), budget, ended, slowPairs, shed)
	if ended < int(shed) {
		t.Fatalf("%d sessions shed but only %d slow receivers were closed", shed, ended)
	}
	// The fast pair is still connected and exchanging.
	fastB.sendJSON(map[string]any{"type": "after", "data": 1})
	fastA.readType("after")
	eventually(t, "queued bytes released", func() bool { return r.srv.hub.queues.bytes.Load() < budget })
}
