package redisbp_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

// rawClient is a plain client of srv, to look at and tamper with relay's
// keys as Redis itself would (eviction, expiry).
func rawClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), DisableIdentity: true, MaxRetries: -1,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// tokenKey is the name of one of token's keys (docs/redis.md, Keys).
func tokenKey(prefix, token, kind string) string {
	sum := sha256.Sum256([]byte(token))
	return prefix + ":{" + hex.EncodeToString(sum[:16]) + "}:" + kind
}

// histBytes is what token's history list holds in Redis, in entries and bytes.
func histBytes(t testing.TB, rdb *redis.Client, prefix, token string) (entries int, bytes int64) {
	t.Helper()
	list, err := rdb.LRange(context.Background(), tokenKey(prefix, token, "hist"), 0, -1).Result()
	if err != nil {
		t.Fatalf("LRANGE: %v", err)
	}
	for _, e := range list {
		bytes += int64(len(e))
	}
	return len(list), bytes
}

// checkAccounting checks that token's meta agrees with its history and id
// keys: the window's length, its bytes and its client ids.
func checkAccounting(t testing.TB, rdb *redis.Client, prefix, token string) {
	t.Helper()
	ctx := context.Background()
	meta, err := rdb.HGetAll(ctx, tokenKey(prefix, token, "meta")).Result()
	if err != nil {
		t.Fatalf("HGETALL meta: %v", err)
	}
	if len(meta) == 0 {
		return // evicted or expired: nothing to agree with
	}
	num := func(k string) int64 { n, _ := strconv.ParseInt(meta[k], 10, 64); return n }
	entries, bytes := histBytes(t, rdb, prefix, token)
	ids, err := rdb.HKeys(ctx, tokenKey(prefix, token, "ids")).Result()
	if err != nil {
		t.Fatalf("HKEYS ids: %v", err)
	}
	realIDs := 0
	for _, k := range ids {
		if k != "" { // the padding field
			realIDs++
		}
	}
	if got := num("seq") - num("evicted"); got != int64(entries) || num("bytes") != bytes || num("idn") != int64(realIDs) {
		t.Fatalf("token %s: meta says %d entries, %d bytes, %d ids; Redis holds %d entries, %d bytes, %d ids",
			token, got, num("bytes"), num("idn"), entries, bytes, realIDs)
	}
}

// gather returns the value of the series name (summed over its labels)
// that c exports, and whether it exported any.
func gather(t testing.TB, c prometheus.Collector, name string) (float64, bool) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	return gatherFrom(t, reg, name)
}

func gatherFrom(t testing.TB, reg prometheus.Gatherer, name string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		sum := 0.0
		for _, m := range f.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		return sum, true
	}
	return 0, false
}

// Redis may drop any one of a token's keys on its own (a maxmemory policy
// evicts key by key). Whatever it drops, seq never goes back, a resume
// is complete only if it really is, a client id is never relayed twice
// while the window claims to cover it, and the history read a page at a
// time returns what was published after the loss.
func TestLostKeysCloseTheWindow(t *testing.T) {
	srv := redistest.Start(t)
	rdb := rawClient(t, srv)
	for _, lost := range [][]string{{"meta"}, {"hist"}, {"ids"}, {"meta", "hist"}, {"hist", "ids"}} {
		t.Run(strings.Join(lost, "+"), func(t *testing.T) {
			prefix := newPrefix(t)
			bp := open(t, srv, prefix, redisbp.Options{History: history()})
			token := "lost"
			var sent []*core.Message
			for i := 1; i <= 5; i++ {
				m := msg(token, "h5", i)
				m.ID = fmt.Sprintf("c-%d", i)
				publish(t, bp, m)
				sent = append(sent, m)
			}
			for _, k := range lost {
				if err := rdb.Del(context.Background(), tokenKey(prefix, token, k)).Err(); err != nil {
					t.Fatal(err)
				}
			}
			again := msg(token, "h5", 3)
			again.ID = "c-3"
			res := publish(t, bp, again)
			h, err := bp.History(context.Background(), token, sent[1].Seq, 0)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case res.Duplicate && res.Seq != sent[2].Seq:
				t.Fatalf("the resend of c-3 was answered as a duplicate of seq %d, want %d", res.Seq, sent[2].Seq)
			case !res.Duplicate && h.Complete:
				t.Fatalf("c-3 was relayed again (seq %d), yet a resume from before it is complete: %d messages", again.Seq, len(h.Messages))
			}
			x, y := msg(token, "h5", 6), msg(token, "h5", 7)
			publish(t, bp, x)
			publish(t, bp, y)
			if x.Seq <= sent[4].Seq || y.Seq != x.Seq+1 {
				t.Fatalf("seqs after the loss: %d, %d; the last before it was %d", x.Seq, y.Seq, sent[4].Seq)
			}
			// Resumes read a page at a time: a page must start where it says.
			page, err := bp.History(context.Background(), token, x.Seq, 1)
			if err != nil {
				t.Fatal(err)
			}
			if !page.Complete || len(page.Messages) != 1 || page.Messages[0].Seq != y.Seq {
				got := make([]uint64, 0, len(page.Messages))
				for _, m := range page.Messages {
					got = append(got, m.Seq)
				}
				t.Fatalf("one page after seq %d: complete %v, seqs %v; want complete, [%d]", x.Seq, page.Complete, got, y.Seq)
			}
			checkAccounting(t, rdb, prefix, token)
		})
	}
}

// One token's history in Redis holds at most history.max_token_bytes
// (plus its newest message), measured in Redis, and the meta's byte count
// agrees with the list; the messages it dropped are counted.
func TestTokenBytesBoundInRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := rawClient(t, srv)
	prefix := newPrefix(t)
	opts := history()
	opts.Size = 1000
	opts.MaxTokenBytes = 64 << 10
	bp := open(t, srv, prefix, redisbp.Options{History: opts})
	payload := `"` + strings.Repeat("p", 3000) + `"`
	for i := 0; i < 100; i++ {
		m := msg("big", "h5", i)
		m.Data = []byte(payload)
		m.ID = fmt.Sprintf("b-%d", i)
		publish(t, bp, m)
	}
	entries, bytes := histBytes(t, rdb, prefix, "big")
	if bytes > opts.MaxTokenBytes || entries < 15 {
		t.Fatalf("the token's history holds %d entries, %d bytes in Redis; want at most %d bytes, all but one entry's worth used",
			entries, bytes, opts.MaxTokenBytes)
	}
	checkAccounting(t, rdb, prefix, "big")
	if n, _ := gather(t, bp, "relay_redis_history_trimmed_total"); int(n) != 100-entries {
		t.Fatalf("relay_redis_history_trimmed_total = %v, want %d", n, 100-entries)
	}
}

// fill stores keys without a TTL (which no volatile-* policy evicts) until
// Redis refuses even a small one for want of memory, and returns a
// function that deletes them again. (A refused command's own arguments
// count while Redis checks, so after a large value is refused there is
// still room for smaller ones.)
func fill(t testing.TB, rdb *redis.Client) (free func()) {
	t.Helper()
	ctx := context.Background()
	var keys []string
	for _, size := range []int{256 << 10, 16 << 10, 1 << 10, 64} {
		value := strings.Repeat("f", size)
		for {
			key := fmt.Sprintf("fill-%d", len(keys))
			err := rdb.Set(ctx, key, value, 0).Err()
			if err != nil {
				if !strings.HasPrefix(err.Error(), "OOM ") {
					t.Fatalf("filling Redis: %v", err)
				}
				break
			}
			keys = append(keys, key)
			if len(keys) > 100000 {
				t.Fatal("Redis took 100,000 keys without refusing: is maxmemory set?")
			}
		}
	}
	return func() {
		if len(keys) > 0 {
			if err := rdb.Del(ctx, keys...).Err(); err != nil {
				t.Fatalf("freeing Redis: %v", err)
			}
		}
	}
}

// A Redis that is full and may not evict refuses a publish before it did
// anything: the error says so (unavailable, not unconfirmed), nothing is
// delivered, the refusal is counted, and once memory is freed the next
// publish works and takes the seq the refused one did not. With history
// off the script's first write used to come after its PUBLISH.
func TestOutOfMemoryRefusesCleanly(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Config{MaxMemory: "8mb", MaxMemoryPolicy: "noeviction"})
	rdb := rawClient(t, srv)
	for _, size := range []int{0, 100} {
		t.Run(fmt.Sprintf("history%d", size), func(t *testing.T) {
			opts := history()
			opts.Size = size
			bp := open(t, srv, newPrefix(t), redisbp.Options{History: opts})
			r := &recorder{}
			defer bp.Subscribe("full", r)()
			live(t, bp, "full")
			before := msg("full", "h5", 0)
			publish(t, bp, before)

			free := fill(t, rdb)
			refused := msg("full", "h5", 1)
			refused.ID = "r-1"
			_, err := bp.Publish(context.Background(), []*core.Message{refused})
			if err == nil || !errors.Is(err, core.ErrBackplaneFull) || errors.Is(err, core.ErrPublishUnconfirmed) {
				t.Fatalf("publish into a full Redis: %v; want a certain refusal wrapping core.ErrBackplaneFull", err)
			}
			if n, _ := gather(t, bp, "relay_redis_oom_total"); n < 1 {
				t.Fatalf("relay_redis_oom_total = %v after a refusal", n)
			}
			free()
			after := msg("full", "h5", 2)
			after.ID = "r-1" // the client resends it
			if res := publish(t, bp, after); res.Duplicate || after.Seq != before.Seq+1 {
				t.Fatalf("the resend after memory was freed: %+v, seq %d; want new, seq %d", res, after.Seq, before.Seq+1)
			}
			waitFor(t, "the resend's delivery", 5*time.Second, func() bool { return len(r.messages()) >= 2 })
			got := r.messages()
			if len(got) != 2 || got[0].Seq != before.Seq || got[1].Seq != after.Seq || string(got[1].Data) != "2" {
				for _, m := range got {
					t.Logf("delivered seq %d data %s", m.Seq, m.Data)
				}
				t.Fatalf("delivered %d messages; want the one before and the resend", len(got))
			}
		})
	}
}

// Through relay: a sender whose message a full Redis refuses gets
// relay.error unavailable saying why (no silence, no hang), relay's
// /metrics count it, and once memory is freed the resend is relayed, as
// are other tokens' messages.
func TestOutOfMemoryAnswersTheSender(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Config{MaxMemory: "8mb", MaxMemoryPolicy: "noeviction"})
	rdb := rawClient(t, srv)
	nodes := cluster(t, srv, 2, redisbp.Options{})
	mini, _ := v1(t, nodes[1], "oom", "miniapp")
	h5, _ := v1(t, nodes[0], "oom", "h5")
	mini.readType("relay.presence")
	otherMini, _ := v1(t, nodes[1], "oom-other", "miniapp")
	otherH5, _ := v1(t, nodes[0], "oom-other", "h5")
	otherMini.readType("relay.presence")

	free := fill(t, rdb)
	h5.send(`{"type":"x","id":"a","data":1}`)
	refusal := data(h5.readType("relay.error"))
	if refusal["code"] != "unavailable" || refusal["id"] != "a" || !strings.Contains(fmt.Sprint(refusal["message"]), "out of memory") {
		t.Fatalf("refusal %v; want unavailable for id a, saying relay is out of memory", refusal)
	}
	if n, ok := gatherFrom(t, nodes[0].srv.Metrics().Registry, "relay_redis_oom_total"); !ok || n < 1 {
		t.Fatalf("relay_redis_oom_total on /metrics = %v (exported %v)", n, ok)
	}
	// Full: a refused command's own arguments no longer count once refused,
	// so used_memory is just under maxmemory.
	if used, ok := gatherFrom(t, nodes[0].srv.Metrics().Registry, "relay_redis_used_memory_bytes"); !ok || used < 7<<20 {
		t.Fatalf("relay_redis_used_memory_bytes on /metrics = %v (exported %v); Redis is full at 8 MiB", used, ok)
	}
	free()
	h5.send(`{"type":"x","id":"a","data":2}`)
	if ack := data(h5.readType("relay.ack")); ack["id"] != "a" {
		t.Fatalf("ack %v", ack)
	}
	if got := mini.readType("x"); fmt.Sprint(got["data"]) != "2" {
		t.Fatalf("the peer got %v; want the resend", got)
	}
	otherH5.send(`{"type":"y","id":"b","data":3}`)
	otherH5.readType("relay.ack")
	if got := otherMini.readType("y"); fmt.Sprint(got["data"]) != "3" {
		t.Fatalf("the other token's peer got %v", got)
	}
}

// The documented setup (maxmemory with volatile-lru): many tokens flooding
// large messages fill Redis past its maxmemory, and Redis evicts instead
// of refusing. Meanwhile another token sends and receives every message;
// each flooding token's history stays within history.max_token_bytes; the
// metrics show Redis's total, its maxmemory and the evictions.
func TestFloodCannotFailOtherTokens(t *testing.T) {
	const maxmemory = 16 << 20
	srv := redistest.StartWith(t, redistest.Config{MaxMemory: strconv.Itoa(maxmemory), MaxMemoryPolicy: "volatile-lru"})
	rdb := rawClient(t, srv)
	prefix := newPrefix(t)
	opts := config.Default().History
	opts.MaxTokenBytes = 512 << 10
	a := open(t, srv, prefix, redisbp.Options{History: opts})
	b := open(t, srv, prefix, redisbp.Options{History: opts})

	const floodTokens, perToken, size = 40, 24, 30 << 10 // 40 × 512 KiB of history: more than maxmemory
	payload := []byte(`"` + strings.Repeat("z", size) + `"`)
	r := &recorder{}
	defer b.Subscribe("victim", r)()
	live(t, b, "victim")

	var wg sync.WaitGroup
	var floodErrs atomic.Int64
	var firstErr atomic.Value
	tokens := make(chan int, floodTokens)
	for i := 0; i < floodTokens; i++ {
		tokens <- i
	}
	close(tokens)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tokens {
				token := fmt.Sprintf("flood-%d", i)
				for n := 0; n < perToken; n++ {
					m := msg(token, "h5", n)
					m.Data = payload
					if _, err := a.Publish(context.Background(), []*core.Message{m}); err != nil {
						floodErrs.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
			}
		}()
	}
	// The victim sends with ids throughout the flood, and after it.
	flooding := make(chan struct{})
	go func() { wg.Wait(); close(flooding) }()
	var victim []*core.Message
	for i := 0; ; i++ {
		m := msg("victim", "h5", i)
		m.ID = fmt.Sprintf("v-%d", i)
		if _, err := a.Publish(context.Background(), []*core.Message{m}); err != nil {
			t.Fatalf("the victim's message %d failed during the flood: %v", i, err)
		}
		victim = append(victim, m)
		select {
		case <-flooding:
		default:
			continue
		}
		if i >= 50 {
			break
		}
	}
	if n := floodErrs.Load(); n > 0 {
		t.Fatalf("%d flood publishes failed though Redis may evict: first %v", n, firstErr.Load())
	}
	waitFor(t, "the victim's messages on the other instance", 10*time.Second, func() bool { return len(r.messages()) >= len(victim) })
	for i, m := range r.messages() {
		if i >= len(victim) || m.Seq != victim[i].Seq || string(m.Data) != strconv.Itoa(i) {
			t.Fatalf("delivery %d of the victim: seq %d data %s; want seq %d data %d", i, m.Seq, m.Data, victim[i].Seq, i)
		}
	}

	// The metrics first: reading the lists below takes memory for the
	// replies, and Redis may evict more to make room for them, so what
	// the lists hold afterwards can only be less than when used_memory
	// was read.
	evicted, _ := gather(t, a, "relay_redis_evicted_keys_total")
	used, ok := gather(t, a, "relay_redis_used_memory_bytes")
	limit, _ := gather(t, a, "relay_redis_maxmemory_bytes")
	policy, _ := gather(t, a, "relay_redis_maxmemory_policy")
	var held int64
	for i := 0; i < floodTokens; i++ {
		token := fmt.Sprintf("flood-%d", i)
		_, bytes := histBytes(t, rdb, prefix, token)
		if bytes > opts.MaxTokenBytes {
			t.Fatalf("%s holds %d bytes of history in Redis, over history.max_token_bytes %d", token, bytes, opts.MaxTokenBytes)
		}
		held += bytes
		// Redis evicted keys one by one; a history read notices what is
		// gone and brings the token's meta in line.
		if _, err := a.History(context.Background(), token, 0, 0); err != nil {
			t.Fatal(err)
		}
		checkAccounting(t, rdb, prefix, token)
	}
	checkAccounting(t, rdb, prefix, "victim")
	// The victim's window is honest whatever Redis evicted.
	if h, err := a.History(context.Background(), "victim", victim[0].Seq-1, 0); err != nil {
		t.Fatal(err)
	} else if h.Complete && len(h.Messages) != len(victim) {
		t.Fatalf("the victim's history claims to be complete with %d of %d messages", len(h.Messages), len(victim))
	}

	t.Logf("flood: %d tokens × %d × %d bytes; Redis holds %d bytes of their history, used_memory %v of %v, %v keys evicted",
		floodTokens, perToken, size, held, used, limit, evicted)
	switch {
	case evicted == 0:
		t.Fatal("Redis evicted nothing: the flood did not reach maxmemory, so the test proves nothing")
	case !ok || used < float64(held) || used > maxmemory*5/4:
		t.Fatalf("relay_redis_used_memory_bytes = %v (exported %v); want between the history held (%d) and maxmemory + 25%%", used, ok, held)
	case limit != maxmemory || policy != 1:
		t.Fatalf("relay_redis_maxmemory_bytes = %v, relay_redis_maxmemory_policy = %v", limit, policy)
	}
}

// At start relay tells the operator whether Redis's memory is bounded in a
// way its keys survive (docs/redis.md, Memory).
func TestStartWarnsOfAnUnsafeMemoryPolicy(t *testing.T) {
	srv := redistest.Start(t)
	rdb := rawClient(t, srv)
	for _, c := range []struct {
		maxmemory, policy, want string
	}{
		{"0", "volatile-lru", "no maxmemory"},
		{"64mb", "noeviction", "noeviction"},
		{"64mb", "volatile-ttl", "volatile-lru is safer"},
		{"64mb", "allkeys-random", "volatile-lru is safer"},
		{"64mb", "volatile-lru", ""},
		{"64mb", "allkeys-lfu", ""},
	} {
		t.Run(c.maxmemory+"-"+c.policy, func(t *testing.T) {
			ctx := context.Background()
			if err := rdb.ConfigSet(ctx, "maxmemory", c.maxmemory).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.ConfigSet(ctx, "maxmemory-policy", c.policy).Err(); err != nil {
				t.Fatal(err)
			}
			var buf strings.Builder
			var mu sync.Mutex
			log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelWarn}))
			open(t, srv, newPrefix(t), redisbp.Options{History: history(), Log: log})
			mu.Lock()
			text := buf.String()
			mu.Unlock()
			if c.want == "" && strings.Contains(text, "maxmemory") || c.want != "" && !strings.Contains(text, c.want) {
				t.Fatalf("warnings at start:\n%s\nwant %q", text, c.want)
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
