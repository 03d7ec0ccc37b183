package redisbp

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// What Redis holds in total is read from Redis itself (INFO), when
// Prometheus scrapes: used_memory counts everything (every token's keys,
// other data sharing the Redis, client buffers), costs Redis one small
// command per scrape and instance, and cannot drift. A total kept by the
// scripts would be one key every publish of every token writes (a hot key,
// and no longer cluster-safe), and would go wrong whenever Redis evicts or
// expires a key on its own.

var (
	descUsedMemory = prometheus.NewDesc("relay_redis_used_memory_bytes",
		"Memory the Redis of the backplane uses (INFO memory used_memory), read when scraped.", nil, nil)
	descMaxMemory = prometheus.NewDesc("relay_redis_maxmemory_bytes",
		"maxmemory of the Redis of the backplane (INFO memory); 0: none, so nothing bounds what it holds.", nil, nil)
	descPolicy = prometheus.NewDesc("relay_redis_maxmemory_policy",
		"1, labelled with the maxmemory-policy of the Redis of the backplane (docs/redis.md says which are safe).", []string{"policy"}, nil)
	descEvicted = prometheus.NewDesc("relay_redis_evicted_keys_total",
		"Keys the Redis of the backplane evicted to stay within maxmemory (INFO stats evicted_keys), any client's.", nil, nil)
	descOOM = prometheus.NewDesc("relay_redis_oom_total",
		"Calls of this instance that Redis refused for want of memory (OOM: over maxmemory and nothing it may evict); refused sends get relay.error unavailable.", nil, nil)
	descTrimmed = prometheus.NewDesc("relay_redis_history_trimmed_total",
		"Messages this instance's publishes dropped from a token's history in Redis to keep it within history.max_token_bytes.", nil, nil)
	descReconnects = prometheus.NewDesc("relay_redis_pubsub_reconnects_total",
		"Pub/sub connection losses of this instance.", nil, nil)
	descCatchUps = prometheus.NewDesc("relay_redis_catchup_messages_total",
		"Messages this instance delivered from the history after a pub/sub reconnect or a seq gap.", nil, nil)
	descGaps = prometheus.NewDesc("relay_redis_catchup_gaps_total",
		"Catch-ups that found messages no longer in the history (lost for live sessions; resumes see resumed:false).", nil, nil)
)

var _ prometheus.Collector = (*Backplane)(nil)

// Describe makes the backplane a prometheus.Collector: relay's server
// registers it with its metrics.
func (b *Backplane) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUsedMemory, descMaxMemory, descPolicy, descEvicted,
		descOOM, descTrimmed, descReconnects, descCatchUps, descGaps} {
		ch <- d
	}
}

// Collect reads Redis's memory figures (skipped while Redis is known
// unreachable, or when it does not answer within a second) and reports
// the backplane's counters.
func (b *Backplane) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	c := b.Counters()
	counter(descOOM, b.oom.Load())
	counter(descTrimmed, b.trimmed.Load())
	counter(descReconnects, c.Reconnects)
	counter(descCatchUps, c.CatchUps)
	counter(descGaps, c.Gaps)
	if b.closed.Load() || b.reachable() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, min(b.opts.OpTimeout, time.Second))
	defer cancel()
	mem, err := readMemory(ctx, b.rdb)
	if err != nil {
		b.log.Debug("redis backplane: cannot read INFO for the metrics", "err", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUsedMemory, prometheus.GaugeValue, float64(mem.Used))
	ch <- prometheus.MustNewConstMetric(descMaxMemory, prometheus.GaugeValue, float64(mem.Max))
	ch <- prometheus.MustNewConstMetric(descPolicy, prometheus.GaugeValue, 1, mem.Policy)
	if mem.Evicted >= 0 {
		counter(descEvicted, mem.Evicted)
	}
}

// redisMemory is what Redis says of its memory.
type redisMemory struct {
	Used    int64  // used_memory
	Max     int64  // maxmemory; 0: none
	Policy  string // maxmemory_policy
	Evicted int64  // evicted_keys since Redis started; -1: unknown
}

func readMemory(ctx context.Context, rdb *redis.Client) (redisMemory, error) {
	// Two commands, since Redis 6 takes one section per INFO.
	pipe := rdb.Pipeline()
	memory := pipe.Info(ctx, "memory")
	stats := pipe.Info(ctx, "stats")
	_, _ = pipe.Exec(ctx)
	text, err := memory.Result()
	if err != nil {
		return redisMemory{}, err
	}
	m := redisMemory{Evicted: -1}
	fields := infoFields(text)
	if m.Used, err = strconv.ParseInt(fields["used_memory"], 10, 64); err != nil {
		return redisMemory{}, errNoMemoryInfo
	}
	m.Max, _ = strconv.ParseInt(fields["maxmemory"], 10, 64)
	m.Policy = fields["maxmemory_policy"]
	if s, err := stats.Result(); err == nil {
		if n, err := strconv.ParseInt(infoFields(s)["evicted_keys"], 10, 64); err == nil {
			m.Evicted = n
		}
	}
	return m, nil
}

var errNoMemoryInfo = errors.New("redis backplane: INFO memory has no used_memory")

// infoFields parses INFO's "key:value" lines.
func infoFields(text string) map[string]string {
	fields := make(map[string]string, 32)
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	return fields
}

// checkMemoryPolicy tells the operator at start whether Redis is bounded
// in a way relay's keys survive (docs/redis.md, Memory). It never fails:
// a provider may refuse INFO.
func checkMemoryPolicy(ctx context.Context, rdb *redis.Client, addr string, log *slog.Logger) {
	mem, err := readMemory(ctx, rdb)
	if err != nil {
		log.Warn("redis backplane: cannot read INFO memory; the relay_redis_* memory metrics will be missing", "addr", addr, "err", err)
		return
	}
	attrs := []any{"addr", addr, "maxmemory", mem.Max, "policy", mem.Policy, "used_memory", mem.Used}
	switch {
	case mem.Max == 0:
		log.Warn("redis backplane: redis has no maxmemory: nothing bounds what it holds; set maxmemory and maxmemory-policy volatile-lru (docs/redis.md)", attrs...)
	case mem.Policy == "noeviction":
		log.Warn("redis backplane: redis evicts nothing (noeviction): once full it refuses every instance's sends until history expires; volatile-lru is safer (docs/redis.md)", attrs...)
	case mem.Policy == "volatile-ttl" || strings.HasSuffix(mem.Policy, "-random"):
		log.Warn("redis backplane: this maxmemory-policy evicts busy tokens' state and presence claims before idle history; volatile-lru is safer (docs/redis.md)", attrs...)
	default:
		log.Info("redis backplane: redis memory", attrs...)
	}
}
