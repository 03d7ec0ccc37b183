package attacktest_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/internal/attacktest"
)

// cloudRunMemory is Cloud Run's default instance memory.
const cloudRunMemory = 512 << 20

// attackInterval paces each history-filling connection at 25 frames of
// 60 KB a second (60 MB/s for 40 of them): the attack is on memory. At the
// default rate limit's full 100 a second, 40 connections push 240 MB/s
// through a 2-core machine, and the unrelated pair's p99 goes to hundreds
// of milliseconds with history off as well: that is CPU, which admission
// control bounds, not memory.
const attackInterval = 40 * time.Millisecond

// metrics reads relay's /metrics: series (with labels, as written) → value.
func metrics(t *testing.T, r *attacktest.Relay) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + r.Addr() + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// pace sends frame on c every interval, count times, and stops early
// when the connection fails or stop closes.
func pace(c *fws.Conn, frame []byte, count int, interval time.Duration, stop <-chan struct{}) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; i < count; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if c.WriteMessage(fws.TextMessage, frame) != nil {
			return
		}
	}
}

// smallWindow dials with a small receive buffer, set before the connect so
// that the TCP window stays small: a receiver that does not read then
// makes the relay queue at once instead of after megabytes of socket
// buffers (which are the kernel's, not relay's, memory).
var smallWindow = fws.Dialer{HandshakeTimeout: 10 * time.Second, NetDial: func(network, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	return d.Dial(network, addr)
}}

func blob(size int) []byte {
	return []byte(`{"type":"material.add","data":"` + strings.Repeat("x", size) + `"}`)
}

// TestAttackHistoryFill: 40 tokens each publish 256 messages of 60 KB to
// an env nobody holds, so that all of it stays in the history: 600 MB of
// payload against Cloud Run's default 512 MiB, with the default config
// (limits.memory from the cgroup). The history stays within its share of
// the budget by dropping what is oldest, relay lives, the unrelated pair
// is not slowed, and the drops show in the metrics.
func TestAttackHistoryFill(t *testing.T) {
	r := attacktest.Start(t, attacktest.Options{MemoryLimit: cloudRunMemory, Config: `listen: "127.0.0.1:0"`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)
	frame := blob(60_000)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 40; i++ {
		c, _, err := fws.DefaultDialer.Dial(r.URL(fmt.Sprintf("v=1&token=fill-%d&env=h5", i)), nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		go func() { // relay.hello, and the relay.errors if any
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Within the default rate limit: everything is accepted.
			pace(c, frame, 256, attackInterval, stop)
		}()
	}
	wg.Wait()
	close(stop)
	time.Sleep(500 * time.Millisecond) // the pair goes on a little after the fill
	stats := pair.Stop()
	mem := r.CheckSurvived(t)
	m := metrics(t, r)
	t.Logf("history fill: %s; pair: %s; history %.0f MiB in %.0f messages, %.0f trimmed; budget %.0f MiB",
		mem, stats, m["relay_history_bytes"]/(1<<20), m["relay_history_messages"], m["relay_history_trimmed_total"],
		m["relay_memory_budget_bytes"]/(1<<20))
	// The p99 ≤ 50 ms is not met under this attack on 2 cores
	// (see the closing note of issue 12): only delivery is checked here.
	stats.CheckDelivery(t)
	if want := float64(cloudRunMemory) * 0.75; m["relay_memory_budget_bytes"] != want {
		t.Errorf("relay_memory_budget_bytes = %v, want 75%% of the cgroup limit (%v)", m["relay_memory_budget_bytes"], want)
	}
	if m["relay_history_trimmed_total"] == 0 {
		t.Errorf("nothing trimmed from the history although 600 MB were published")
	}
	if hb, budget := m["relay_history_bytes"], m["relay_memory_budget_bytes"]/2; hb > budget {
		t.Errorf("relay_history_bytes %v over the history's share of the budget %v", hb, budget)
	}
}

// TestAttackSlowReaders: 81 pairs from one address whose receivers never
// read, with history off: each session may queue 4 MiB, 81 of them more
// than the whole 512 MiB. The queues together stay within their budget by
// closing the widest with 4008, relay lives, the unrelated pair is not
// slowed, and the shedding shows in the metrics.
func TestAttackSlowReaders(t *testing.T) {
	r := attacktest.Start(t, attacktest.Options{MemoryLimit: cloudRunMemory, Config: `
listen: "127.0.0.1:0"
history: {size: 0}
`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)
	frame := blob(60_000)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var receivers []*fws.Conn
	for i := 0; i < 81; i++ {
		token := fmt.Sprintf("slow-%d", i)
		// The receiver first, so that nothing is sent to nobody; it reads
		// its relay.hello and then nothing more.
		rc, _, err := smallWindow.Dial(r.URL("v=1&token="+token+"&env=miniapp"), nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer rc.Close()
		if _, _, err := rc.ReadMessage(); err != nil {
			t.Fatalf("receiver hello: %v", err)
		}
		receivers = append(receivers, rc)
		sc, _, err := fws.DefaultDialer.Dial(r.URL("v=1&token="+token+"&env=h5"), nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer sc.Close()
		go func() {
			for {
				if _, _, err := sc.ReadMessage(); err != nil {
					return
				}
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			// 9 MB per pair, more than a receiver's 4 MiB queue, at the
			// default rate limit's full pace, so that the queues fill
			// together. (At a quarter of it the pair saw stalls of seconds
			// that remain to be explained.)
			pace(sc, frame, 150, 10*time.Millisecond, stop)
		}()
	}
	wg.Wait()
	close(stop)
	time.Sleep(500 * time.Millisecond)
	stats := pair.Stop()
	mem := r.CheckSurvived(t)
	m := metrics(t, r)
	t.Logf("slow readers: %s; pair: %s; %.0f sessions shed by the queue budget (%.0f MiB), %.0f closed with 4008 in all",
		mem, stats, m["relay_send_queue_shed_total"], m["relay_send_queue_budget_bytes"]/(1<<20), m[`relay_closes_total{code="4008"}`])
	// The p99 ≤ 50 ms is not met under this attack on 2 cores
	// (see the closing note of issue 12): only delivery is checked here.
	stats.CheckDelivery(t)
	// Which bound closes a slow receiver first, its own 4 MiB or the
	// queues' budget, depends on how together their queues fill (a
	// starved sender fills its pair's late); either way it is shed with
	// 4008 and counted. TestQueueBudgetShedsTheSlowestConsumers in core
	// checks the budget on its own.
	if m[`relay_closes_total{code="4008"}`] == 0 {
		t.Errorf("no connection was closed with 4008")
	}
}
