package redisbp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// Options tune a Backplane. Zero values take the defaults.
type Options struct {
	History config.History // history bounds, as for the memory backplane
	Log     *slog.Logger   // nil: discard

	// ClaimTTL is how long a session's claim of its token+env outlives its
	// instance: presence of a crashed instance's sessions ends after at
	// most ClaimTTL+RefreshInterval. Default 30s.
	ClaimTTL time.Duration
	// RefreshInterval is how often an instance extends its claims and
	// sweeps the expired claims of the tokens it holds. Default 10s.
	RefreshInterval time.Duration
	// OpTimeout bounds every Redis call without a deadline of its own.
	// Default 2s.
	OpTimeout time.Duration
	// HealthInterval is how often the connections are checked when idle:
	// a silent pub/sub connection is replaced after 3 intervals. Default 1s.
	HealthInterval time.Duration
	// StartTimeout bounds New's first contact with Redis. Default 5s.
	StartTimeout time.Duration
}

func (o *Options) defaults() {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.ClaimTTL <= 0 {
		o.ClaimTTL = 30 * time.Second
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = o.ClaimTTL / 3
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = 2 * time.Second
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 5 * time.Second
	}
	if o.History.Size < 0 {
		o.History.Size = 0
	}
	if o.History.TTL < time.Millisecond {
		o.History.TTL = time.Millisecond
	}
	// history.max_bytes bounds the memory backplane's history in all
	// tokens together; in Redis, maxmemory does (docs/redis.md).
	if o.History.MaxTokenBytes <= 0 {
		o.History.MaxTokenBytes = 1 << 62
	}
}

// Backplane is the core.Backplane shared by relay instances through Redis.
type Backplane struct {
	opts     Options
	ropts    *redis.Options // of rdb, for the health check's throwaway clients
	prefix   string
	metaKeep time.Duration
	instance string
	log      *slog.Logger
	rdb      *redis.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	psMu sync.RWMutex // guards ps, which the reader replaces when it goes silent
	ps   *redis.PubSub

	mu      sync.RWMutex
	subs    map[string]*subscription   // by channel
	waiting map[string][]*subscription // SUBSCRIBE commands sent and not yet confirmed, per channel

	cmdMu   sync.Mutex
	cmds    []psCommand
	cmdWake chan struct{}

	claimsMu sync.Mutex
	claims   map[string]map[string]string // token -> env -> session, the claims this instance holds

	ids      *idCache // client ids accepted through this instance
	resumeMu sync.Mutex
	resuming map[string]time.Time // token\0env -> when a session of it joined here

	pingMu sync.Mutex
	pings  map[string]chan struct{}
	pingN  atomic.Uint64

	behind map[*subscription]struct{} // subscriptions whose catch-up failed; reader only

	// clockOffset is Redis's clock minus this host's, in ns, as the health
	// check last measured it (within half its round trip).
	clockOffset atomic.Int64

	redisOK  atomic.Bool
	pubsubOK atomic.Bool
	upMu     sync.Mutex
	up       chan struct{} // closed, and replaced, whenever the health check finds Redis reachable again

	reconnects, catchUps, gaps atomic.Int64
	trimmed                    atomic.Int64 // history entries dropped to keep history.max_token_bytes
	oom                        atomic.Int64 // calls Redis refused with OOM
}

// Counters are what the backplane went through since New.
type Counters struct {
	Reconnects int64 // pub/sub connection losses
	CatchUps   int64 // messages delivered from the history after a reconnect or a gap
	Gaps       int64 // catch-ups that found messages no longer in the history
}

// Counters returns the backplane's counters.
func (b *Backplane) Counters() Counters {
	return Counters{Reconnects: b.reconnects.Load(), CatchUps: b.catchUps.Load(), Gaps: b.gaps.Load()}
}

var _ core.Backplane = (*Backplane)(nil)

// subscription is this instance's subscription to one token's channel.
type subscription struct {
	token string
	keys  tokenKeys
	ready chan struct{} // closed when Redis confirmed the first SUBSCRIBE

	mu         sync.Mutex // held while delivering, so an unsubscribed deliverer hears nothing more
	deliverers []core.Deliverer

	// Reader goroutine only.
	confirmed bool
	lastSeq   uint64    // newest seq delivered
	behind    bool      // a catch-up failed: live messages wait for the next one
	retryAt   time.Time // when behind: when to try again
	// floor is the newest seq a History call on this instance returned
	// after the subscription was live: the reader knows nothing older
	// than it can be missing.
	floor atomic.Uint64
}

type psCommand struct {
	subscribe bool
	channel   string
	sub       *subscription
}

// tokenKeys are the Redis names of one token's state. They share the hash
// tag {h}, h being a hash of the token, so a cluster keeps them in one slot
// (and the token itself never appears in Redis).
type tokenKeys struct {
	meta, hist, ids, owners, channel string
}

func (b *Backplane) keys(token string) tokenKeys {
	sum := sha256.Sum256([]byte(token))
	base := b.prefix + ":{" + hex.EncodeToString(sum[:16]) + "}:"
	return tokenKeys{meta: base + "meta", hist: base + "hist", ids: base + "ids", owners: base + "owners", channel: base + "chan"}
}

var setLoggerOnce sync.Once

// New connects to the Redis at cfg.URL and starts the backplane's
// goroutines. It fails when Redis cannot be reached within
// opts.StartTimeout (or ctx).
func New(ctx context.Context, cfg config.Backplane, opts Options) (*Backplane, error) {
	opts.defaults()
	ropts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis backplane: bad url: %w", err)
	}
	// Redis 7.0 knows neither CLIENT SETINFO nor maintenance notifications;
	// asking for them only logs errors on every connection.
	ropts.DisableIdentity = true
	ropts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	// A script that ran but whose reply was lost must not run again: a
	// publish would be relayed twice. Callers see the error instead.
	ropts.MaxRetries = -1
	ropts.DialerRetries = 1
	ropts.DialTimeout = opts.OpTimeout
	ropts.ContextTimeoutEnabled = true
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = "relay"
	}
	setLoggerOnce.Do(func() { redis.SetLogger(redisLogger{opts.Log}) })

	rdb := redis.NewClient(ropts)
	startCtx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	offset, err := measureClock(startCtx, rdb)
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis backplane: cannot reach redis at %s: %w", ropts.Addr, err)
	}
	for _, s := range []*redis.Script{publishScript, historyScript, seenScript, joinScript, leaveScript, tendScript} {
		if err := s.Load(startCtx, rdb).Err(); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("redis backplane: loading scripts into %s: %w", ropts.Addr, err)
		}
	}
	checkMemoryPolicy(startCtx, rdb, ropts.Addr, opts.Log)

	var id [6]byte
	_, _ = rand.Read(id[:])
	b := &Backplane{
		opts:     opts,
		ropts:    ropts,
		prefix:   prefix,
		metaKeep: max(2*opts.History.TTL, 10*time.Minute, 2*opts.ClaimTTL),
		instance: hex.EncodeToString(id[:]),
		log:      opts.Log,
		rdb:      rdb,
		subs:     make(map[string]*subscription),
		waiting:  make(map[string][]*subscription),
		cmdWake:  make(chan struct{}, 1),
		up:       make(chan struct{}),
		claims:   make(map[string]map[string]string),
		pings:    make(map[string]chan struct{}),
		ids:      newIDCache(idCacheSize),
		resuming: make(map[string]time.Time),
	}
	b.clockOffset.Store(int64(offset))
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.ps = rdb.Subscribe(b.ctx)
	b.redisOK.Store(true)
	b.pubsubOK.Store(true)
	b.wg.Add(4)
	go b.readLoop()
	go b.commandLoop()
	go b.tendLoop()
	go b.healthLoop()
	return b, nil
}

// redisLogger sends go-redis's own log lines to the relay's log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug("redis: " + strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// Ready reports whether the backplane reaches Redis with both its command
// connections and its pub/sub connection: /readyz should fail otherwise.
func (b *Backplane) Ready() bool {
	return !b.closed.Load() && b.redisOK.Load() && b.pubsubOK.Load()
}

// Instance is the id this backplane's claims carry.
func (b *Backplane) Instance() string { return b.instance }

func (b *Backplane) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, b.opts.OpTimeout)
}

func ms(d time.Duration) int64 { return max(d.Milliseconds(), 1) }

var (
	errClosed        = errors.New("redis backplane: closed")
	errNotSubscribed = errors.New("redis backplane: the token's channel subscription is not live yet")
)

func (b *Backplane) Publish(ctx context.Context, batch []*core.Message) (core.PublishResult, error) {
	var r [1]core.BatchResult
	b.PublishBatches(ctx, [][]*core.Message{batch}, r[:])
	return r[0].PublishResult, r[0].Err
}

var _ core.BatchPublisher = (*Backplane)(nil)

// PublishBatches runs the publish script once for all the batches: one
// script call costs Redis little more for 8 small client messages than for
// one. Redis runs a script whole or not at all, so the batches succeed or
// fail together, but a failure whose reply was lost may have published
// them: clients resend with their ids, which dedupe.
func (b *Backplane) PublishBatches(ctx context.Context, batches [][]*core.Message, results []core.BatchResult) {
	fail := func(err error) {
		for i, batch := range batches {
			if len(batch) > 0 {
				results[i] = core.BatchResult{Err: err}
			}
		}
	}
	var token string
	size, n := 0, 0
	for i, batch := range batches {
		results[i] = core.BatchResult{}
		if len(batch) == 0 {
			continue
		}
		if n == 0 {
			token = batch[0].Token
		} else if batch[0].Token != token {
			fail(errors.New("redis backplane: publish: batches of different tokens in one call"))
			return
		}
		n++
		size += 2 + len(batch)
	}
	if n == 0 {
		return
	}
	if b.closed.Load() {
		fail(errClosed)
		return
	}
	if err := b.reachable(); err != nil {
		// Known unreachable (the health check checks every 100 ms):
		// refused without sending, which is certain.
		fail(err)
		return
	}
	k := b.keys(token)
	b.awaitSubscribed(ctx, k.channel)
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	idKeys := make([]string, 0, n)
	args := make([]any, 0, 7+size)
	args = append(args, b.opts.History.Size, ms(b.opts.History.TTL), ms(b.metaKeep), b.opts.History.MaxTokenBytes,
		k.channel, n, b.scriptDeadline(ctx))
	for _, batch := range batches {
		if len(batch) == 0 {
			continue
		}
		idKey := b.idKey(batch[0])
		idKeys = append(idKeys, idKey)
		args = append(args, idKey, len(batch))
		for _, m := range batch {
			args = append(args, encodeMessage(make([]byte, 0, 32+len(m.Data)+len(m.Type)), m))
		}
	}
	res, err := publishScript.Run(ctx, b.rdb, []string{k.meta, k.hist, k.ids}, args...).Int64Slice()
	if err != nil {
		fail(publishFailure(n, b.noted(err)))
		return
	}
	if len(res) == 1 && res[0] == -1 {
		fail(fmt.Errorf("redis backplane: publish (%d client messages): %w", n, errLate))
		return
	}
	if len(res) != 2*n+1 {
		fail(fmt.Errorf("redis backplane: publish: %d values in the reply for %d client messages", len(res), n))
		return
	}
	b.trimmed.Add(res[2*n])
	j := 0
	for i, batch := range batches {
		if len(batch) == 0 {
			continue
		}
		dup, seq, idKey := res[2*j] == 1, uint64(res[2*j+1]), idKeys[j]
		j++
		results[i].PublishResult = core.PublishResult{Seq: seq, Duplicate: dup}
		if !dup {
			first := seq + 1 - uint64(len(batch))
			for x, m := range batch {
				m.Seq = first + uint64(x)
			}
		}
		if idKey != "" {
			b.ids.put(token, idKey, seq)
		}
	}
}

// reachable fails at once, without dialing, while the health check finds
// Redis unreachable: go-redis stops dialing for a second at a time once
// its pool has seen PoolSize dial errors (its own circuit breaker, probing
// once a second), so every dial made during an outage would delay the
// recovery after it. While Redis is down only the health check's own
// throwaway connections dial.
func (b *Backplane) reachable() error {
	if !b.redisOK.Load() {
		return errUnreachable
	}
	return nil
}

// noted returns err, first taking a failed dial as Redis being unreachable
// (the health check confirms it or not within 100 ms).
func (b *Backplane) noted(err error) error {
	if isDialError(err) {
		b.markDown(err)
	}
	if isOOM(err) {
		b.oom.Add(1)
	}
	return err
}

// isOOM reports whether Redis refused a call for want of memory: over its
// maxmemory and, by its policy, unable to evict (noeviction, or nothing
// left that it may evict). Redis refuses a script at its first write that
// needs memory, before anything it did matters (see publishScript).
func isOOM(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "OOM ")
}

// isDialError reports whether err is a failure to connect.
func isDialError(err error) bool {
	var op *net.OpError
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial"))
}

// waitReachable returns once Redis is not known unreachable, or false when
// the backplane closes first.
func (b *Backplane) waitReachable() bool {
	for !b.redisOK.Load() {
		b.upMu.Lock()
		up := b.up
		b.upMu.Unlock()
		if b.redisOK.Load() {
			break
		}
		select {
		case <-up:
		case <-b.ctx.Done():
			return false
		}
	}
	return true
}

func (b *Backplane) markDown(err error) {
	if b.redisOK.Swap(false) {
		b.log.Error("redis backplane: redis unreachable", "err", err)
	}
}

var (
	errUnreachable = errors.New("redis backplane: redis unreachable; not sent")
	errLate        = errors.New("reached redis after its deadline; refused unrun")
)

// scriptDeadline is the Redis time after which a publish sent now under ctx
// must not run: halfway to ctx's deadline, leaving the other half for
// the error of the clock offset estimate (a round trip at most) and the
// reply. A call that times out has therefore either run in time (and its
// reply was lost: unconfirmed) or will never run.
func (b *Backplane) scriptDeadline(ctx context.Context) int64 {
	now := time.Now()
	budget := b.opts.OpTimeout / 2
	if dl, ok := ctx.Deadline(); ok {
		budget = dl.Sub(now) / 2
	}
	return now.Add(budget + time.Duration(b.clockOffset.Load())).UnixMilli()
}

// publishFailure says what a failed publish call means for its messages:
// either certainly not published (the command never reached Redis, or
// Redis refused it before running it), or unknown, wrapped in
// core.ErrPublishUnconfirmed: the call may have run and only its reply be
// lost. A resend with the same client id is safe in both cases.
func publishFailure(n int, err error) error {
	if isOOM(err) {
		return fmt.Errorf("redis backplane: publish (%d client messages) refused: redis is over its maxmemory: %w: %w", n, core.ErrBackplaneFull, err)
	}
	if notRun(err) {
		return fmt.Errorf("redis backplane: publish (%d client messages) refused: %w", n, err)
	}
	return fmt.Errorf("redis backplane: publish (%d client messages): %w: %w", n, core.ErrPublishUnconfirmed, err)
}

// notRun reports whether err proves that a script was not run: no
// connection could be had, or Redis answered with an error it gives before
// running anything.
func notRun(err error) bool {
	if errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		// Refusals before the script starts. An error raised while it runs
		// ("ERR user_script…") may come after some of its effects.
		msg := rerr.Error()
		for _, p := range []string{"LOADING ", "BUSY ", "OOM ", "NOPERM ", "MISCONF ", "READONLY ", "MASTERDOWN ", "NOAUTH ", "WRONGPASS ", "NOSCRIPT "} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return false
}

// idKey is how a batch's client id is stored: per sending env. Without a
// history there is no dedupe window, so no id is kept.
func (b *Backplane) idKey(first *core.Message) string {
	if first.ID == "" || b.opts.History.Size <= 0 {
		return ""
	}
	return first.From + "\x00" + first.ID
}

// Seen answers from what this instance knows and asks Redis only when a
// repeat may have been accepted elsewhere: after a session of the
// token+env joined here (clients resend what was not acked right after
// relay.hello), until the first id Redis has not seen (later ids are new).
// Otherwise an id not accepted through this instance counts as new
// without a round trip: Publish, which deduplicates atomically in Redis,
// stays the authority, so a repeat that still slips through is detected
// there (only the pipeline ran twice).
func (b *Backplane) Seen(ctx context.Context, token, from, id string) (uint64, bool, error) {
	if id == "" || b.opts.History.Size == 0 {
		return 0, false, nil
	}
	if b.closed.Load() {
		return 0, false, errClosed
	}
	idKey := from + "\x00" + id
	if seq, ok := b.ids.get(token, idKey, b.opts.History.TTL); ok {
		return seq, true, nil
	}
	if !b.resumingSince(token, from) {
		return 0, false, nil
	}
	if err := b.reachable(); err != nil {
		return 0, false, err
	}
	k := b.keys(token)
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	seq, err := seenScript.Run(ctx, b.rdb, []string{k.meta, k.hist, k.ids}, ms(b.opts.History.TTL), idKey).Int64()
	if errors.Is(err, redis.Nil) {
		b.resumed(token, from)
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("redis backplane: seen: %w", b.noted(err))
	}
	return uint64(seq), true, nil
}

// resumeWindow is how long after a join Seen keeps asking Redis.
const resumeWindow = 10 * time.Second

func (b *Backplane) resumingSince(token, env string) bool {
	b.resumeMu.Lock()
	defer b.resumeMu.Unlock()
	at, ok := b.resuming[token+"\x00"+env]
	return ok && time.Since(at) < resumeWindow
}

func (b *Backplane) resumed(token, env string) {
	b.resumeMu.Lock()
	delete(b.resuming, token+"\x00"+env)
	b.resumeMu.Unlock()
}

func (b *Backplane) History(ctx context.Context, token string, since uint64, limit int) (core.HistoryResult, error) {
	if b.closed.Load() {
		return core.HistoryResult{}, errClosed
	}
	k := b.keys(token)
	b.awaitSubscribed(ctx, k.channel)
	b.mu.RLock()
	sub := b.subs[k.channel]
	b.mu.RUnlock()
	// A session goes live on what this instance's subscription delivers
	// after the history it read. A subscription Redis has not confirmed yet
	// has delivered nothing and will not catch up on what is published
	// before its confirmation, so reading the history now would leave a
	// gap after it: the caller must retry (a joining session is closed
	// with 1012 and reconnects) instead.
	if sub != nil && !isClosed(sub.ready) {
		return core.HistoryResult{}, errNotSubscribed
	}
	res, _, err := b.history(ctx, token, k, since, limit)
	if err != nil {
		return res, err
	}
	// Whatever History saw published is handed to this instance's
	// subscribers of the token before History returns, as with the memory
	// backplane: a joining session then neither misses nor repeats a
	// message at the seam between replay and live traffic.
	if sub != nil {
		if b.barrier(ctx) == nil {
			for {
				f := sub.floor.Load()
				if f >= res.Last || sub.floor.CompareAndSwap(f, res.Last) {
					break
				}
			}
		}
	}
	return res, nil
}

// historyState is where a token's retained history begins.
type historyState struct {
	base    uint64 // seq before the first message of the token's current life
	evicted uint64 // newest seq no longer retained
}

// history reads token's history after since.
func (b *Backplane) history(ctx context.Context, token string, k tokenKeys, since uint64, limit int) (core.HistoryResult, historyState, error) {
	if err := b.reachable(); err != nil {
		return core.HistoryResult{}, historyState{}, err
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	reply, err := historyScript.Run(ctx, b.rdb, []string{k.meta, k.hist, k.ids},
		ms(b.opts.History.TTL), ms(b.metaKeep), strconv.FormatUint(since, 10), max(limit, 0)).Slice()
	if err != nil {
		return core.HistoryResult{}, historyState{}, fmt.Errorf("redis backplane: history: %w", b.noted(err))
	}
	if len(reply) < 3 {
		return core.HistoryResult{}, historyState{}, fmt.Errorf("redis backplane: history: unexpected reply %v", reply)
	}
	seq, base, evicted := asUint(reply[0]), asUint(reply[1]), asUint(reply[2])
	res := core.HistoryResult{Last: seq}
	from := since
	if from == 0 {
		// "Everything retained": complete only if nothing was ever lost.
		from = base
	}
	res.Complete = from >= evicted && from <= seq
	res.Messages = make([]*core.Message, 0, len(reply)-3)
	for _, e := range reply[3:] {
		entry, _ := e.(string)
		s, msg, err := parseEntry(entry)
		if err != nil {
			return core.HistoryResult{}, historyState{}, fmt.Errorf("redis backplane: history of token %s: %w", shortHash(token), err)
		}
		if s <= since {
			continue
		}
		m, err := decodeMessage(msg)
		if err != nil {
			return core.HistoryResult{}, historyState{}, fmt.Errorf("redis backplane: history of token %s: %w", shortHash(token), err)
		}
		m.Token, m.Seq = token, s
		res.Messages = append(res.Messages, m)
	}
	return res, historyState{base: base, evicted: evicted}, nil
}

func asUint(v any) uint64 {
	switch n := v.(type) {
	case int64:
		return uint64(n)
	case string:
		u, _ := strconv.ParseUint(n, 10, 64)
		return u
	}
	return 0
}

// parseEntry splits a history entry "seq:at:idlen:idkey message".
func parseEntry(e string) (uint64, []byte, error) {
	var fields [3]uint64
	rest := e
	for i := range fields {
		j := strings.IndexByte(rest, ':')
		if j <= 0 {
			return 0, nil, errCorrupt
		}
		n, err := strconv.ParseUint(rest[:j], 10, 64)
		if err != nil {
			return 0, nil, errCorrupt
		}
		fields[i] = n
		rest = rest[j+1:]
	}
	if fields[2] > uint64(len(rest)) {
		return 0, nil, errCorrupt
	}
	return fields[0], []byte(rest[fields[2]:]), nil
}

func shortHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}

func (b *Backplane) Join(ctx context.Context, req core.JoinRequest) (core.JoinResult, error) {
	if b.closed.Load() {
		return core.JoinResult{}, errClosed
	}
	if err := b.reachable(); err != nil {
		return core.JoinResult{}, err
	}
	k := b.keys(req.Token)
	b.awaitSubscribed(ctx, k.channel)
	reject := "0"
	if req.Reject {
		reject = "1"
	}
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	reply, err := joinScript.Run(ctx, b.rdb, []string{k.meta, k.owners},
		req.Env, req.Session, b.instance, reject, req.MaxEnvs, ms(b.opts.ClaimTTL), k.channel, ms(b.metaKeep)).Slice()
	if err != nil {
		return core.JoinResult{}, fmt.Errorf("redis backplane: join: %w", b.noted(err))
	}
	status, _ := reply[0].(string)
	switch status {
	case "taken":
		return core.JoinResult{}, core.ErrEnvTaken
	case "full":
		return core.JoinResult{}, core.ErrTokenFull
	case "ok":
	default:
		return core.JoinResult{}, fmt.Errorf("redis backplane: join: unexpected reply %v", reply)
	}
	res := core.JoinResult{Epoch: asUint(reply[2]), Peers: make([]string, 0, len(reply)-3)}
	res.Replaced, _ = reply[1].(string)
	for _, p := range reply[3:] {
		env, _ := p.(string)
		res.Peers = append(res.Peers, env)
	}
	b.resumeMu.Lock()
	b.resuming[req.Token+"\x00"+req.Env] = time.Now()
	b.resumeMu.Unlock()
	b.claimsMu.Lock()
	envs := b.claims[req.Token]
	if envs == nil {
		envs = make(map[string]string, 2)
		b.claims[req.Token] = envs
	}
	envs[req.Env] = req.Session
	b.claimsMu.Unlock()
	return res, nil
}

func (b *Backplane) Leave(ctx context.Context, token, env, session string) error {
	if b.closed.Load() {
		return errClosed
	}
	b.forgetClaim(token, env, session)
	if err := b.reachable(); err != nil {
		return err // the claim expires on its own
	}
	k := b.keys(token)
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	if err := leaveScript.Run(ctx, b.rdb, []string{k.owners}, env, session, k.channel).Err(); err != nil {
		return fmt.Errorf("redis backplane: leave: %w", b.noted(err))
	}
	return nil
}

// forgetClaim stops refreshing session's claim; it reports whether the
// session held it here.
func (b *Backplane) forgetClaim(token, env, session string) bool {
	b.claimsMu.Lock()
	defer b.claimsMu.Unlock()
	envs := b.claims[token]
	if envs[env] != session {
		return false
	}
	delete(envs, env)
	if len(envs) == 0 {
		delete(b.claims, token)
	}
	return true
}

func (b *Backplane) holdsClaim(token, env, session string) bool {
	b.claimsMu.Lock()
	defer b.claimsMu.Unlock()
	return b.claims[token][env] == session
}

// Close stops the goroutines and closes the connections. Claims are not
// given up: sessions Leave on their own, and what remains expires.
func (b *Backplane) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.cancel()
	closePS := func() {
		b.psMu.RLock()
		ps := b.ps
		b.psMu.RUnlock()
		_ = ps.Close()
	}
	closePS() // unblocks the reader
	b.wg.Wait()
	closePS() // the reader may have replaced it meanwhile
	return b.rdb.Close()
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
