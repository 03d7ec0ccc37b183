package handlers

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pairrelay/relay/core"
)

// fakeClock drives a rate_limit handler's time by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func buildLimiter(t *testing.T, config string) (*RateLimit, *fakeClock) {
	t.Helper()
	r := build(t, config).(*RateLimit)
	clock := &fakeClock{t: time.Unix(1700000000, 0)}
	r.now = clock.now
	return r, clock
}

func from(token, env string) *core.Message {
	m := msg("x", "")
	m.Token, m.From = token, env
	return m
}

func send(t *testing.T, h core.Handler, m *core.Message) string {
	t.Helper()
	return outcome(h.Handle(context.Background(), m))
}

func TestRateLimitPerToken(t *testing.T) {
	r, clock := buildLimiter(t, "handler: rate_limit\nrate: 1\nburst: 3")
	for i := 0; i < 3; i++ {
		if got := send(t, r, from("A", "h5")); got != "pass" {
			t.Fatalf("message %d: %s, want pass (burst 3)", i, got)
		}
	}
	if got := send(t, r, from("A", "miniapp")); got != "reject:rate_limited" {
		t.Fatalf("4th message of token A (other env): %s, want reject:rate_limited", got)
	}
	if got := send(t, r, from("B", "h5")); got != "pass" {
		t.Fatalf("token B: %s, want its own bucket", got)
	}
	clock.advance(time.Second)
	if got := send(t, r, from("A", "h5")); got != "pass" {
		t.Fatalf("after 1s: %s, want one more token", got)
	}
	if got := send(t, r, from("A", "h5")); got != "reject:rate_limited" {
		t.Fatalf("after 1s, second: %s, want reject", got)
	}
	_, err := r.Handle(context.Background(), from("A", "h5"))
	if want := "rate_limited: too many messages: at most 1 per second (bursts of 3)"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestRateLimitPerSessionAndRoute(t *testing.T) {
	s, _ := buildLimiter(t, "handler: rate_limit\nrate: 1\nburst: 1\nper: session\naction: drop")
	if send(t, s, from("A", "h5")) != "pass" || send(t, s, from("A", "miniapp")) != "pass" {
		t.Fatal("per session: each env of a token has its own bucket")
	}
	if got := send(t, s, from("A", "h5")); got != "drop" {
		t.Fatalf("per session, over the limit with action drop: %s", got)
	}
	r, clock := buildLimiter(t, "handler: rate_limit\nrate: 2\nper: route") // burst defaults to 2
	if send(t, r, from("A", "h5")) != "pass" || send(t, r, from("B", "pc")) != "pass" {
		t.Fatal("per route: burst 2 (rate rounded up) should pass two messages")
	}
	if got := send(t, r, from("C", "pc")); got != "reject:rate_limited" {
		t.Fatalf("per route: third message %s, want reject", got)
	}
	clock.advance(500 * time.Millisecond)
	if got := send(t, r, from("D", "pc")); got != "pass" {
		t.Fatalf("per route after 0.5s at 2/s: %s, want pass", got)
	}
}

// TestRateLimitRealClock uses the wall clock with a rate so low that no
// token can come back during the test, however slow the machine.
func TestRateLimitRealClock(t *testing.T) {
	h := build(t, "handler: rate_limit\nrate: 0.001\nburst: 2")
	got := []string{send(t, h, from("A", "h5")), send(t, h, from("A", "h5")), send(t, h, from("A", "h5"))}
	if fmt.Sprint(got) != "[pass pass reject:rate_limited]" {
		t.Fatalf("outcomes = %v", got)
	}
}

func TestRateLimitConcurrent(t *testing.T) {
	h := build(t, "handler: rate_limit\nrate: 0.001\nburst: 50")
	var passed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if out, err := h.Handle(context.Background(), from("A", "h5")); err == nil && len(out) == 1 {
					passed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := passed.Load(); n != 50 {
		t.Fatalf("%d of 800 passed, want exactly the burst (50)", n)
	}
}

func TestRateLimitKeysAreBounded(t *testing.T) {
	r, _ := buildLimiter(t, "handler: rate_limit\nrate: 1\nmax_keys: 32")
	for i := 0; i < 5000; i++ {
		send(t, r, from(fmt.Sprintf("tok-%d", i), "h5"))
	}
	if n := r.keys(); n > 32 {
		t.Fatalf("%d buckets held, want at most max_keys (32)", n)
	}
}

func TestRateLimitForgetsIdleBuckets(t *testing.T) {
	r, clock := buildLimiter(t, "handler: rate_limit\nrate: 1\nburst: 5")
	shard := func(key string) uint64 { return maphash.String(r.seed, key) % rateShards }
	// Tokens that share a shard, as the sweep works shard by shard.
	var same []string
	for i := 0; len(same) < 21; i++ {
		if k := fmt.Sprintf("tok-%d", i); shard(k) == 0 {
			same = append(same, k)
		}
	}
	for _, k := range same[:20] {
		send(t, r, from(k, "h5"))
	}
	if n := r.keys(); n != 20 {
		t.Fatalf("%d buckets, want 20", n)
	}
	clock.advance(5*time.Second + idleAfter) // refilled, then idle a minute: not yet
	send(t, r, from(same[20], "h5"))
	if n := r.keys(); n != 21 {
		t.Fatalf("%d buckets after %s, want 21 (none idle long enough)", n, 5*time.Second+idleAfter)
	}
	clock.advance(time.Second)
	for i := 0; i < 3; i++ {
		send(t, r, from(same[20], "h5"))
	}
	if n := r.keys(); n != 1 {
		t.Fatalf("%d buckets, want only the active one once the idle ones were swept", n)
	}
}
