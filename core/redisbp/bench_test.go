package redisbp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

// BenchmarkCrossInstanceFigures compares relaying across two instances
// through Redis with one instance on the memory backplane: throughput with
// 16 senders going as fast as they can (with and without client ids), and
// latency at a steady 5,000 messages/s (10 pairs, 500/s each, with ids).
// It measures once, whatever b.N is; run it without -race:
//
//	go test -run '^$' -bench CrossInstanceFigures -benchtime 1x -v ./core/redisbp/
//
// RELAY_BENCH=mem or =redis measures one side only; RELAY_BENCH_ONLY=
// throughput or =latency one figure; RELAY_BENCH_ONE=1 adds the latency of
// a single pair.
func BenchmarkCrossInstanceFigures(bench *testing.B) {
	if bench.N > 1 {
		bench.Skip("one measurement is enough: use -benchtime 1x")
	}
	var t testing.TB = bench
	redis := redistest.Start(t)
	benchCfg := func(c *config.Config) {
		c.Limits.MessagesPerSecond = 0
		c.Limits.SendQueue = 1 << 20
		c.Limits.SendQueueBytes = 1 << 30
	}
	mem := memoryRelay(t, benchCfg)
	nodes := cluster(t, redis, 2, redisbp.Options{}, benchCfg)

	type setup struct {
		name         string
		sendTo, recv string
	}
	setups := []setup{{"memory, 1 instance", mem, mem}, {"redis, 2 instances", nodes[0].url, nodes[1].url}}
	switch os.Getenv("RELAY_BENCH") {
	case "mem":
		setups = setups[:1]
	case "redis":
		setups = setups[1:]
	}
	only := os.Getenv("RELAY_BENCH_ONLY") // throughput or latency
	const pairs = 16
	for _, ids := range []bool{false, true} {
		if only == "latency" {
			break
		}
		var base float64
		for _, s := range setups {
			rate := throughput(t, s.sendTo, s.recv, pairs, 4000, ids)
			if base == 0 {
				base = rate
			}
			t.Logf("throughput %-20s ids=%-5v %d pairs: %8.0f msg/s (%.0f%% of memory)", s.name, ids, pairs, rate, 100*rate/base)
		}
	}
	if reply, err := redisCommandAll(redis, "INFO commandstats"); err == nil {
		t.Logf("redis command stats:\n%s", reply)
	}
	var memP99 time.Duration
	for _, s := range setups {
		if only == "throughput" {
			break
		}
		if os.Getenv("RELAY_BENCH_ONE") != "" {
			one := latency(t, s.sendTo, s.recv, 1, 500, 3*time.Second)
			t.Logf("latency %-20s 1 pair x 500 msg/s: p50 %v p99 %v", s.name, pct(one, 50), pct(one, 99))
		}
		lat := latency(t, s.sendTo, s.recv, 10, 500, 5*time.Second)
		p50, p99, pmax := pct(lat, 50), pct(lat, 99), lat[len(lat)-1]
		if memP99 == 0 {
			memP99 = p99
		}
		t.Logf("latency %-20s 10 pairs x 500 msg/s = 5000 msg/s, ids: %d samples, p50 %v p99 %v max %v (p99 +%v over memory)",
			s.name, len(lat), p50, p99, pmax, p99-memP99)
	}
}

func memoryRelay(t testing.TB, mutate ...func(*config.Config)) string {
	cfg := config.Default()
	for _, m := range mutate {
		m(cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bp := core.NewMemoryBackplane(cfg.History)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("RELAY_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(testWriter{t, "mem"}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := core.NewServer(cfg, log, bp)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		_ = bp.Close()
	})
	return "ws://" + ln.Addr().String() + cfg.Path
}

// benchPair connects token's h5 to sendTo and miniapp to recv.
func benchPair(t testing.TB, sendTo, recv, token string) (sender, receiver *fws.Conn) {
	d := fws.Dialer{HandshakeTimeout: 5 * time.Second}
	var err error
	if receiver, _, err = d.Dial(recv+"?v=1&env=miniapp&token="+token, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { receiver.Close() })
	_, _, _ = receiver.ReadMessage() // hello: joined
	if sender, _, err = d.Dial(sendTo+"?v=1&env=h5&token="+token, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sender.Close() })
	_, _, _ = sender.ReadMessage()   // hello
	_, _, _ = receiver.ReadMessage() // presence: h5 online
	// The sender reads (and drops) its acks.
	go func() {
		for {
			if _, _, err := sender.ReadMessage(); err != nil {
				return
			}
		}
	}()
	return sender, receiver
}

var benchRun int

// throughput sends n messages on each of pairs tokens as fast as the
// relay takes them and returns the messages received per second.
func throughput(t testing.TB, sendTo, recv string, pairs, n int, ids bool) float64 {
	benchRun++
	conns := make([][2]*fws.Conn, pairs)
	for i := range conns {
		s, r := benchPair(t, sendTo, recv, fmt.Sprintf("tp%d-%d", benchRun, i))
		conns[i] = [2]*fws.Conn{s, r}
	}
	payload := `{"text":"` + string(slices.Repeat([]byte("x"), 200)) + `"}`
	var wg sync.WaitGroup
	start := time.Now()
	for _, c := range conns {
		wg.Add(2)
		go func(s *fws.Conn) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				frame := `{"type":"bench","data":` + payload
				if ids {
					frame += `,"id":"b-` + strconv.Itoa(i) + `"`
				}
				if err := s.WriteMessage(fws.TextMessage, []byte(frame+"}")); err != nil {
					t.Error(err)
					return
				}
			}
		}(c[0])
		go func(r *fws.Conn) {
			defer wg.Done()
			_ = r.SetReadDeadline(time.Now().Add(60 * time.Second))
			for i := 0; i < n; i++ {
				if _, _, err := r.ReadMessage(); err != nil {
					t.Errorf("receiver after %d: %v", i, err)
					return
				}
			}
		}(c[1])
	}
	wg.Wait()
	return float64(pairs*n) / time.Since(start).Seconds()
}

// latency sends perSecond messages per second on each of pairs tokens for
// d and returns every message's send-to-receive time, sorted.
func latency(t testing.TB, sendTo, recv string, pairs, perSecond int, d time.Duration) []time.Duration {
	benchRun++
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	for p := 0; p < pairs; p++ {
		s, r := benchPair(t, sendTo, recv, fmt.Sprintf("lat%d-%d", benchRun, p))
		n := int(d.Seconds() * float64(perSecond))
		wg.Add(2)
		go func(p int) {
			defer wg.Done()
			// Spread the senders over the period, as independent clients are.
			period := time.Second / time.Duration(perSecond)
			time.Sleep(period * time.Duration(p) / time.Duration(pairs))
			tick := time.NewTicker(period)
			defer tick.Stop()
			for i := 0; i < n; i++ {
				<-tick.C
				frame := fmt.Sprintf(`{"type":"lat","data":{"at":%d},"id":"l-%d"}`, time.Now().UnixNano(), i)
				if err := s.WriteMessage(fws.TextMessage, []byte(frame)); err != nil {
					t.Error(err)
					return
				}
			}
		}(p)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, n)
			_ = r.SetReadDeadline(time.Now().Add(d + 30*time.Second))
			for i := 0; i < n; i++ {
				_, b, err := r.ReadMessage()
				if err != nil {
					t.Errorf("receiver after %d: %v", i, err)
					break
				}
				var f struct{ Data struct{ At int64 } }
				_ = json.Unmarshal(b, &f)
				local = append(local, time.Duration(time.Now().UnixNano()-f.Data.At))
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all)
	return all
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p/100))]
}

// redisCommandAll runs one inline command and returns its bulk reply.
func redisCommandAll(s *redistest.Server, cmd string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	rd := bufio.NewReader(conn)
	head, err := rd.ReadString('\n')
	if err != nil || len(head) < 3 || head[0] != '$' {
		return head, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil {
		return head, err
	}
	body := make([]byte, n+2)
	_, err = io.ReadFull(rd, body)
	return string(body[:n]), err
}
