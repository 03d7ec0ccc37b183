package api_test

import (
	"bytes"
	"context"
	"fmt"
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
history:
  size: 256
`

// BenchmarkPublish publishes small messages to a connected pair in the
// ways a message can enter relay, each delivered to a real WebSocket
// receiver, and reports messages/s and requests/s for each:
//
//	go test -run '^$' -bench Publish -benchtime 2000x ./api
//
// docs/api.md (Throughput) quotes a run.
func BenchmarkPublish(b *testing.B) {
	r := startRelay(b, benchYAML, nil)
	recv := dial(b, r.ws, "token=bench&env=miniapp")
	// receive waits for n messages, then reports how long since start.
	receive := func(n int) {
		b.Helper()
		for i := 0; i < n; i++ {
			_ = recv.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, msg, err := recv.conn.ReadMessage()
			if err != nil {
				b.Fatalf("receiver: %v after %d of %d", err, i, n)
			}
			if bytes.Contains(msg, []byte(`"relay.presence"`)) {
				i--
			}
		}
	}
	report := func(b *testing.B, start time.Time, requests int) {
		secs := time.Since(start).Seconds()
		b.ReportMetric(float64(b.N)/secs, "msgs/s")
		if requests > 0 {
			b.ReportMetric(float64(requests)/secs, "reqs/s")
		}
		b.ReportMetric(0, "ns/op") // per message it is 1e9/(msgs/s): not repeated
	}

	b.Run("websocket", func(b *testing.B) {
		send := dial(b, r.ws, "token=bench&env=h5")
		frame := []byte(`{"type":"tick","data":{"n":1}}`)
		b.ResetTimer()
		start := time.Now()
		done := make(chan struct{})
		go func() { defer close(done); receive(b.N) }()
		for i := 0; i < b.N; i++ {
			if err := send.conn.WriteMessage(fws.TextMessage, frame); err != nil {
				b.Fatal(err)
			}
		}
		<-done
		report(b, start, 0)
		send.conn.Close()
	})

	msg := apiclient.Message{Token: "bench", Type: "tick", Data: []byte(`{"n":1}`)}
	for _, conns := range []int{1, 8} {
		b.Run(fmt.Sprintf("api-publish-%dconn", conns), func(b *testing.B) {
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}}
			c := apiclient.New(r.base, testKey)
			c.HTTP = hc
			b.ResetTimer()
			start := time.Now()
			done := make(chan struct{})
			go func() { defer close(done); receive(b.N) }()
			var wg sync.WaitGroup
			per := (b.N + conns - 1) / conns
			for w := 0; w < conns; w++ {
				n := min(per, b.N-w*per)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < n; i++ {
						if _, err := c.Publish(context.Background(), msg); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			<-done
			report(b, start, b.N)
		})
	}

	b.Run("api-batch-100", func(b *testing.B) {
		c := apiclient.New(r.base, testKey)
		batch := make([]apiclient.Message, 100)
		for i := range batch {
			batch[i] = msg
		}
		b.ResetTimer()
		start := time.Now()
		done := make(chan struct{})
		go func() { defer close(done); receive(b.N) }()
		requests := 0
		for sent := 0; sent < b.N; sent += len(batch) {
			res, err := c.PublishBatch(context.Background(), batch[:min(len(batch), b.N-sent)])
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
		<-done
		report(b, start, requests)
	})
}
