package api_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pairrelay/relay/apiclient"
	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

// startRedisRelay starts a relay on the Redis backplane of redis.
func startRedisRelay(t *testing.T, redis *redistest.Server, prefix string) *relay {
	t.Helper()
	cfg := config.Default()
	cfg.API.Keys = []string{testKey}
	cfg.Limits.MessagesPerSecond = 0
	cfg.Backplane = config.Backplane{Type: config.BackplaneRedis, URL: redis.URL(), Prefix: prefix}
	bp, err := redisbp.New(context.Background(), cfg.Backplane, redisbp.Options{History: cfg.History})
	if err != nil {
		t.Fatal(err)
	}
	r := startRelayConfig(t, cfg, bp)
	t.Cleanup(func() { _ = bp.Close() }) // after the server's shutdown (cleanups run in reverse)
	return r
}

// Two relays on one real redis-server: the API of either one sees and
// reaches the sessions of both.
func TestAPIAcrossInstancesWithRedis(t *testing.T) {
	redis := redistest.Start(t)
	a := startRedisRelay(t, redis, "api-test")
	b := startRedisRelay(t, redis, "api-test")
	ctx := context.Background()

	h5 := dial(t, a.ws, "token=pair-1&env=h5")
	mini := dial(t, b.ws, "token=pair-1&env=miniapp")
	h5.waitPresence("miniapp", true)
	for _, r := range []*relay{a, b} {
		envs, err := r.client.Presence(ctx, "pair-1")
		if err != nil || fmt.Sprint(envs) != "[h5 miniapp]" {
			t.Fatalf("presence through %s: %v, %v; want both instances' envs", r.base, envs, err)
		}
	}

	// Published through A, delivered to B's client (and A's), one seq.
	res, err := a.client.Publish(ctx, apiclient.Message{Token: "pair-1", Type: "materialReady"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*wsClient{h5, mini} {
		if f := c.next(); f["type"] != "materialReady" || uint64(f["seq"].(float64)) != res.Seq {
			t.Fatalf("got %v, want materialReady with seq %d", f, res.Seq)
		}
	}
	// A batch through B goes through Redis's batched publish.
	results, err := b.client.PublishBatch(ctx, []apiclient.Message{{Token: "pair-1", Type: "one"}, {Token: "pair-1", Type: "two"}})
	if err != nil || results[0].Seq != res.Seq+1 || results[1].Seq != res.Seq+2 {
		t.Fatalf("batch through B: %+v, %v", results, err)
	}
	if f := h5.next(); f["type"] != "one" {
		t.Fatalf("h5 got %v", f)
	}

	// Disconnected through A, closed on B.
	envs, err := a.client.Disconnect(ctx, "pair-1", "miniapp", 4410)
	if err != nil || fmt.Sprint(envs) != "[miniapp]" {
		t.Fatalf("disconnect: %v, %v", envs, err)
	}
	if code := mini.closeCode(); code != 4410 {
		t.Fatalf("B's miniapp closed with %d, want 4410", code)
	}
	h5.waitPresence("miniapp", false)
	envs, err = b.client.Presence(ctx, "pair-1")
	if err != nil || fmt.Sprint(envs) != "[h5]" {
		t.Fatalf("presence after the disconnect: %v, %v", envs, err)
	}
	hist, err := b.client.History(ctx, "pair-1", 0, 0)
	if err != nil || len(hist.Messages) != 3 || hist.Messages[0].Seq != res.Seq {
		t.Fatalf("history through B: %+v, %v", hist, err)
	}
}
