package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/redisbp/redistest"
	"github.com/pairrelay/relay/internal/streamtest"
)

// redisConfig is a relay.yaml for an instance sharing redis with others.
func redisConfig(t *testing.T, redis *redistest.Server, prefix string) string {
	return writeConfig(t, fmt.Sprintf(`
listen: "127.0.0.1:0"
limits: {messages_per_second: 0, send_queue: 32} # the history is far larger: a resume is paged
history: {size: 20000}
backplane: {type: redis, url: %q, prefix: %q}
`, redis.URL(), prefix))
}

// helloPeers connects a v1 client and returns the peers its hello names.
func helloPeers(t *testing.T, addr, token, env string) (*fws.Conn, []any) {
	t.Helper()
	conn, _, err := fws.DefaultDialer.Dial("ws://"+addr+"/socket?v=1&token="+url.QueryEscape(token)+"&env="+env, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("hello: %v", err)
	}
	var hello struct {
		Type string
		Data struct{ Peers []any }
	}
	if err := json.Unmarshal(b, &hello); err != nil || hello.Type != "relay.hello" {
		t.Fatalf("first frame %s", b)
	}
	return conn, hello.Data.Peers
}

// Three relay processes share one Redis; clients stream to each other and
// the instances they are connected to are SIGKILLed one after the other.
// The clients reconnect to another instance and nothing is lost, repeated
// or reordered.
func TestRelayProcessesSurviveSIGKILL(t *testing.T) {
	const total = 6000
	redis := redistest.Start(t)
	prefix := fmt.Sprintf("proc%d", time.Now().UnixNano())
	procs := make([]*relayProcess, 3)
	urls := make([]string, 3)
	for i := range procs {
		procs[i] = startProcess(t, redisConfig(t, redis, prefix))
		urls[i] = "ws://" + procs[i].addr + "/socket"
		deadline := time.Now().Add(2 * time.Second)
		for !strings.Contains(procs[i].logText(), "redis backplane connected") && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !strings.Contains(procs[i].logText(), "redis backplane connected") {
			t.Fatalf("instance %d does not use the Redis backplane: serve must build its backplane with newBackplane (cmd/relay/backplane.go); log:\n%s", i, procs[i].logText())
		}
	}
	// The instances see each other's sessions.
	a, _ := helloPeers(t, procs[0].addr, "wiring", "h5")
	b, peers := helloPeers(t, procs[1].addr, "wiring", "miniapp")
	if len(peers) != 1 || peers[0] != "h5" {
		t.Fatalf("miniapp on instance 1 sees peers %v, want [h5] on instance 0", peers)
	}
	a.Close()
	b.Close()

	h5 := streamtest.NewStreamClient(t, urls, 0, "sigkill", "h5", total)
	mini := streamtest.NewStreamClient(t, urls, 1, "sigkill", "miniapp", total)
	start := time.Now()
	streamtest.Exchange(t, h5, mini, total, 60*time.Second, func() {
		for i, third := range []int{total / 3, 2 * total / 3} {
			for h5.Progress() < third || mini.Progress() < third {
				time.Sleep(time.Millisecond)
				if time.Since(start) > 50*time.Second {
					return
				}
			}
			if err := procs[i].cmd.Process.Kill(); err != nil {
				t.Errorf("SIGKILL instance %d: %v", i, err)
			}
			t.Logf("SIGKILLed instance %d after %v", i, time.Since(start).Round(time.Millisecond))
		}
	})
	for _, c := range []*streamtest.StreamClient{h5, mini} {
		if c.Sessions() < 2 {
			t.Errorf("%s never moved to another instance", c.Env())
		}
	}
	if t.Failed() {
		t.Logf("surviving instance log:\n%s", procs[2].logText())
	}
}

func TestNewBackplaneByType(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	cfg := config.Default()
	bp, err := newBackplane(ctx, cfg, core.MemoryBudget{}, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := bp.(*core.MemoryBackplane); !ok {
		t.Fatalf("default backplane is %T", bp)
	}
	bp.Close()

	redis := redistest.Start(t)
	cfg.Backplane = config.Backplane{Type: config.BackplaneRedis, URL: redis.URL(), Prefix: "nb"}
	bp, err = newBackplane(ctx, cfg, core.MemoryBudget{}, log)
	if err != nil {
		t.Fatal(err)
	}
	ready, ok := bp.(interface{ Ready() bool })
	if !ok || !ready.Ready() {
		t.Fatalf("redis backplane %T is not ready", bp)
	}
	bp.Close()

	// Redis unreachable at start: serve must fail, naming the address.
	redis.Kill()
	start := time.Now()
	if _, err := newBackplane(ctx, cfg, core.MemoryBudget{}, log); err == nil || !strings.Contains(err.Error(), redis.Addr()) {
		t.Fatalf("newBackplane without Redis: %v", err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("failing took %v", d)
	}
}
