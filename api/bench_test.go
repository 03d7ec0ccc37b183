package api_test

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/apiclient"
)

// benchYAML lets the receiver fall behind without being a slow consumer:
// the benchmark measures what relay accepts, delivered to a real client.
const benchYAML = `
limits:
  send_queue: 1000000
  send_queue_bytes: 268435456
`

// BenchmarkPublish publishes small messages to a connected pair in the
// ways a message can enter relay, each delivered to a real WebSocket
// receiver: a WebSocket client's sends (without waiting for acks),
// POST /api/v1/publish from one and from 8 HTTP connections, and
// POST /api/v1/publish/batch with 100 messages a request. The ways take
// turns in 10 rounds of b.N/10 messages each, so that a machine whose load
// changes during the run (a shared CI runner) slows them alike and the
// ratios hold. Run it as
//
//	go test -run '^$' -bench Publish -benchtime 20000x ./api
//
// docs/api.md (Throughput) quotes a run.
func BenchmarkPublish(b *testing.B) {
	r := startRelay(b, benchYAML, nil)
	recv := dial(b, r.ws, "token=bench&env=miniapp")
	send := dial(b, r.ws, "token=bench&env=h5")
	receive := func(n int) {
		for i := 0; i < n; i++ {
			_ = recv.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, msg, err := recv.conn.ReadMessage()
			if err != nil {
				b.Errorf("receiver: %v after %d of %d", err, i, n)
				return
			}
			if bytes.Contains(msg, []byte(`"relay.presence"`)) {
				i--
			}
		}
	}
	msg := apiclient.Message{Token: "bench", Type: "tick", Data: []byte(`{"n":1}`)}
	frame := []byte(`{"type":"tick","data":{"n":1}}`)
	one := apiclient.New(r.base, testKey)
	one.HTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	eight := apiclient.New(r.base, testKey)
	eight.HTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	batch := make([]apiclient.Message, 100)
	for i := range batch {
		batch[i] = msg
	}
	publishFrom := func(c *apiclient.Client, conns, n int) int {
		var wg sync.WaitGroup
		per := (n + conns - 1) / conns
		for w := 0; w < conns; w++ {
			k := min(per, n-w*per)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < k; i++ {
					if _, err := c.Publish(context.Background(), msg); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return n
	}
	ways := []struct {
		name string
		run  func(n int) (requests int)
	}{
		{"ws", func(n int) int {
			for i := 0; i < n; i++ {
				if err := send.conn.WriteMessage(fws.TextMessage, frame); err != nil {
					b.Fatal(err)
				}
			}
			return 0
		}},
		{"api", func(n int) int { return publishFrom(one, 1, n) }},
		{"api8", func(n int) int { return publishFrom(eight, 8, n) }},
		{"batch", func(n int) int {
			requests := 0
			for sent := 0; sent < n; sent += len(batch) {
				res, err := one.PublishBatch(context.Background(), batch[:min(len(batch), n-sent)])
				if err != nil {
					b.Fatal(err)
				}
				for _, x := range res {
					if x.Err != nil {
						b.Fatal(x.Err)
					}
				}
				requests++
			}
			return requests
		}},
	}
	const rounds = 10
	elapsed := make([]time.Duration, len(ways))
	requests := make([]int, len(ways))
	per := max(b.N/rounds, 1)
	b.ResetTimer()
	for round := 0; round < rounds; round++ {
		for i, w := range ways {
			start := time.Now()
			done := make(chan struct{})
			go func() { defer close(done); receive(per) }()
			requests[i] += w.run(per)
			<-done
			elapsed[i] += time.Since(start)
		}
	}
	b.StopTimer()
	rate := func(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }
	msgs := per * rounds
	ws := rate(msgs, elapsed[0])
	b.ReportMetric(ws, "ws-msgs/s")
	b.ReportMetric(rate(requests[1], elapsed[1]), "api-reqs/s")
	b.ReportMetric(rate(requests[2], elapsed[2]), "api8conn-reqs/s")
	b.ReportMetric(rate(msgs, elapsed[3]), "batch-msgs/s")
	b.ReportMetric(rate(requests[3], elapsed[3]), "batch-reqs/s")
	b.ReportMetric(rate(requests[1], elapsed[1])/ws, "api/ws")
	b.ReportMetric(rate(msgs, elapsed[3])/ws, "batch/ws")
	b.ReportMetric(0, "ns/op") // per message, each way has its own rate above
}
