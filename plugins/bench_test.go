package plugins

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

func init() {
	// The in-process baseline: a built-in handler that passes every message.
	core.RegisterHandler(core.HandlerSpec{Name: "bench_noop", Summary: "Test only: passes.", New: func() core.Handler { return &noop{} }})
}

type noop struct{}

func (*noop) Handle(_ context.Context, m *core.Message) ([]*core.Message, error) {
	return []*core.Message{m}, nil
}

const benchRoutes = `
listen: 127.0.0.1:0
limits: {messages_per_second: 0}
plugins: [{name: tp, command: TESTPLUGIN}]
routes:
  - match: {type: "*"}
    handlers: [%s]
`

const (
	benchSenders  = 100
	benchMessages = 200                   // per sender and variant, closed loop
	benchPace     = 20 * time.Millisecond // per sender, paced: 5000 msg/s in all
	benchPaced    = 60                    // per sender and variant, paced
)

// BenchmarkPluginOverhead measures what a no-op Go plugin adds to a route,
// against the same route with a built-in no-op handler, with 100 senders,
// over real WebSockets through a relay in this process (the clients share
// its 2 cores), both variants in the same run:
//
//   - paced: each sender sends every 20 ms (5000 msg/s in all, well below
//     saturation): the latency from the sender's write to the receiver's
//     read, p50 and p99, and what the plugin adds to them;
//
//   - saturated: each sender sends its next message as soon as the last was
//     delivered (closed loop): messages per second, the plugin's share of
//     the built-in's, and the CPU per message of this process (relay and
//     clients) and of the plugin process.
//
//     go test -run '^$' -bench PluginOverhead -benchtime 1x ./plugins/
func BenchmarkPluginOverhead(b *testing.B) {
	builtin := startRelay(b, fmt.Sprintf(benchRoutes, "{handler: bench_noop}"))
	plugin := startRelay(b, fmt.Sprintf(benchRoutes, "{handler: plugin, plugin: tp}"))
	pid := pluginPid("tp")
	for b.Loop() {
		relayRound(b, builtin, 20, 0) // warm-up
		relayRound(b, plugin, 20, 0)

		bl, _ := relayRound(b, builtin, benchPaced, benchPace)
		pl, _ := relayRound(b, plugin, benchPaced, benchPace)
		b.ReportMetric(pct(bl, 50), "builtin-p50-µs")
		b.ReportMetric(pct(bl, 99), "builtin-p99-µs")
		b.ReportMetric(pct(pl, 50), "plugin-p50-µs")
		b.ReportMetric(pct(pl, 99), "plugin-p99-µs")
		b.ReportMetric(pct(pl, 50)-pct(bl, 50), "added-p50-µs")
		b.ReportMetric(pct(pl, 99)-pct(bl, 99), "added-p99-µs")

		n := float64(benchSenders * benchMessages)
		self0 := cpuTicks(os.Getpid())
		_, bt := relayRound(b, builtin, benchMessages, 0)
		self1, plug1 := cpuTicks(os.Getpid()), cpuTicks(pid)
		_, pt := relayRound(b, plugin, benchMessages, 0)
		self2, plug2 := cpuTicks(os.Getpid()), cpuTicks(pid)
		b.ReportMetric(bt, "builtin-msg/s")
		b.ReportMetric(pt, "plugin-msg/s")
		b.ReportMetric(100*pt/bt, "throughput-%")
		b.ReportMetric(ticksPerMsg(self1-self0, n), "builtin-cpu-µs/msg")
		b.ReportMetric(ticksPerMsg(self2-self1, n), "plugin-relay-cpu-µs/msg")
		b.ReportMetric(ticksPerMsg(plug2-plug1, n), "plugin-process-cpu-µs/msg")
	}
}

// relayRound has benchSenders pairs exchange n messages each, a message
// every pace (0: as soon as the last was delivered), and returns the
// latencies and the throughput.
func relayRound(b *testing.B, r *testRelay, n int, pace time.Duration) ([]time.Duration, float64) {
	type pair struct{ a, b *client }
	pairs := make([]pair, benchSenders)
	for i := range pairs {
		tok := fmt.Sprintf("bench%d-%d", i, time.Now().UnixNano())
		pairs[i] = pair{r.dial(tok, "a"), r.dial(tok, "b")}
	}
	defer func() {
		for _, p := range pairs {
			p.a.conn.Close()
			p.b.conn.Close()
		}
	}()
	lat := make([][]time.Duration, benchSenders)
	var wg sync.WaitGroup
	errs := make(chan error, benchSenders)
	start := time.Now()
	for i, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now().Add(pace * time.Duration(i) / benchSenders) // spread the senders
			for j := range n {
				if pace > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(pace)
				}
				sent := time.Now()
				if err := p.a.trySend(map[string]any{"type": "bench", "data": map[string]any{"n": j, "text": "some payload"}}); err != nil {
					errs <- err
					return
				}
				if _, err := p.b.tryRead(10 * time.Second); err != nil {
					errs <- err
					return
				}
				lat[i] = append(lat[i], time.Since(sent))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	return all, float64(len(all)) / elapsed.Seconds()
}

// pct is the p-th percentile of ds, in µs.
func pct(ds []time.Duration, p int) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return float64(s[min(len(s)-1, len(s)*p/100)].Nanoseconds()) / 1e3
}

// cpuTicks is the user and system CPU time of process pid, in clock ticks
// (10 ms).
func cpuTicks(pid int) int {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, _ := strconv.Atoi(fields[11])
	stime, _ := strconv.Atoi(fields[12])
	return utime + stime
}

func ticksPerMsg(ticks int, msgs float64) float64 { return float64(ticks) * 1e4 / msgs }

// BenchmarkPluginCall is one plugin round trip after another, without
// WebSockets or a relay around it: the floor of what a plugin adds to a
// message (relay → plugin process → relay over go-plugin's gRPC stream).
//
//	go test -run '^$' -bench PluginCall ./plugins/
func BenchmarkPluginCall(b *testing.B) {
	path := writeConfig(b, "plugins: [{name: tp, command: TESTPLUGIN}]")
	cfg, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	log, _ := newLog(b)
	h := &Handler{Plugin: "tp", MaxMessages: 100}
	if err := h.Provision(context.Background(), core.ProvisionEnv{Log: log, BaseDir: filepath.Dir(path), Config: cfg}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close() })
	m := &core.Message{Type: "noop", From: "a", Data: []byte(`{"n":1,"text":"some payload"}`)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		out, err := h.Handle(ctx, m)
		if err != nil || len(out) != 1 {
			b.Fatalf("out %v, err %v", out, err)
		}
	}
}
