package attacktest_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/internal/attacktest"
)

// TestHarnessSeesAnOOMKill: the harness must be able to fail. A relay
// whose history may hold far more than its memory limit is filled until
// the kernel kills it; the harness reports the kill and the pair reports
// its lost connection.
func TestHarnessSeesAnOOMKill(t *testing.T) {
	r := attacktest.Start(t, attacktest.Options{MemoryLimit: 40 << 20, Config: `
listen: "127.0.0.1:0"
limits: {messages_per_second: 0, memory: -1}
history: {size: 100000, max_bytes: 4294967296, ttl: 1h}
`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)
	payload := `{"type":"fill","data":"` + strings.Repeat("x", 60<<10) + `"}`
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := fws.DefaultDialer.Dial(r.URL(fmt.Sprintf("v=1&token=fill-%d&env=h5", i)), nil)
			if err != nil {
				return
			}
			defer c.Close()
			for !r.Exited() {
				if c.WriteMessage(fws.TextMessage, []byte(payload)) != nil {
					return
				}
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for !r.Exited() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	m := r.Memory()
	stats := pair.Stop()
	t.Logf("relay: %s; pair: %s %v", m, stats, stats.Errors)
	if !m.Killed() {
		t.Fatalf("the harness did not see relay killed: %s", m)
	}
	if m.Method != "/proc sampling" && m.OOMKills == 0 {
		t.Fatalf("relay ended without an OOM kill in its cgroup: %s", m)
	}
	if len(stats.Errors) == 0 && stats.Lost == 0 {
		t.Fatalf("the pair saw nothing wrong although relay died: %s", stats)
	}
}

// TestHarnessQuietRelay: with no attack, relay survives, the pair loses
// nothing, and the cgroup is gone once the relay is stopped.
func TestHarnessQuietRelay(t *testing.T) {
	r := attacktest.Start(t, attacktest.Options{Config: `listen: "127.0.0.1:0"`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)
	time.Sleep(2 * time.Second)
	stats := pair.Stop()
	m := r.CheckSurvived(t)
	stats.Check(t, 50*time.Millisecond)
	if stats.Sent < 20 {
		t.Fatalf("the pair sent only %d messages in 2s", stats.Sent)
	}
	if m.PeakRSS == 0 {
		t.Fatalf("no RSS sampled: %s", m)
	}
	r.Stop()
	if m := r.Memory(); m.Killed() {
		t.Fatalf("a relay stopped by the test counts as killed: %s", m)
	}
	attacktest.LogRow(t, "none", "nothing", m, stats)
}
