package core

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pairrelay/relay/config"
)

// MemoryBackplane is the single-instance backplane: delivery is a function
// call and history lives in this process.
type MemoryBackplane struct {
	opts   config.History
	now    func() time.Time
	seed   maphash.Seed
	shards [64]memoryShard

	bytes     atomic.Int64 // memory the history holds: see retainedSize
	messages  atomic.Int64
	tokens    atomic.Int64
	evictions atomic.Int64
	trimmed   atomic.Int64 // messages dropped to stay within the byte budget

	// reclaim is held by the one publisher that brings the history back
	// within history.max_bytes.
	reclaim sync.Mutex

	stop chan struct{}
	done chan struct{}
}

type memoryShard struct {
	mu     sync.Mutex
	topics map[string]*memoryTopic
}

// memoryTopic is one token's ordering, history and subscribers.
type memoryTopic struct {
	mu      sync.Mutex
	seq     uint64
	base    uint64 // seq before the topic's first message
	evicted uint64 // newest seq no longer retained; seqs after it up to seq are in entries
	entries []historyEntry
	head    int   // entries[head:] are live; the prefix is reclaimed lazily
	bytes   int64 // memory entries[head:] hold, for history.max_token_bytes
	ids     map[string]uint64
	subs    []Deliverer
	owners  map[string]string // env -> session holding it
	claims  uint64            // epochs handed out by Join
	used    time.Time         // last publish or subscribe, for LRU eviction
	dead    bool              // removed from its shard; a new topic takes over
}

type historyEntry struct {
	m     *Message
	at    time.Time
	size  int64
	idKey string
}

// NewMemoryBackplane returns an in-process backplane keeping history as opts say.
func NewMemoryBackplane(opts config.History) *MemoryBackplane {
	b := &MemoryBackplane{opts: opts, now: time.Now, seed: maphash.MakeSeed(),
		stop: make(chan struct{}), done: make(chan struct{})}
	for i := range b.shards {
		b.shards[i].topics = make(map[string]*memoryTopic)
	}
	go b.janitor()
	return b
}

// MemoryStats describe what the history holds.
type MemoryStats struct {
	Tokens, Messages, Bytes, Evictions, Trimmed int64
}

// Stats returns the history's current size.
func (b *MemoryBackplane) Stats() MemoryStats {
	return MemoryStats{Tokens: b.tokens.Load(), Messages: b.messages.Load(), Bytes: b.bytes.Load(),
		Evictions: b.evictions.Load(), Trimmed: b.trimmed.Load()}
}

func (b *MemoryBackplane) shard(token string) *memoryShard {
	return &b.shards[maphash.String(b.seed, token)%uint64(len(b.shards))]
}

// topic returns token's live topic, locked; it creates one when create is set.
func (b *MemoryBackplane) topic(token string, create bool) *memoryTopic {
	for {
		sh := b.shard(token)
		sh.mu.Lock()
		t := sh.topics[token]
		if t == nil {
			if !create {
				sh.mu.Unlock()
				return nil
			}
			b.makeRoomLocked(sh)
			// A new topic's seqs start above any an earlier topic of the
			// same token can have used, so clients never see seq go back.
			start := uint64(b.now().UnixMilli()) * 1000
			t = &memoryTopic{seq: start, base: start, evicted: start, used: b.now()}
			sh.topics[token] = t
			b.tokens.Add(1)
			b.bytes.Add(topicSize(token))
		}
		sh.mu.Unlock()
		t.mu.Lock()
		if !t.dead {
			return t
		}
		t.mu.Unlock()
	}
}

// makeRoomLocked forgets the least recently used idle topic of the shard
// when the shard holds its share of history.max_tokens.
func (b *MemoryBackplane) makeRoomLocked(sh *memoryShard) {
	limit := (b.opts.MaxTokens + len(b.shards) - 1) / len(b.shards)
	if len(sh.topics) < limit {
		return
	}
	var victimToken string
	var victim *memoryTopic
	for token, t := range sh.topics {
		t.mu.Lock()
		idle := len(t.subs) == 0 && len(t.owners) == 0
		if idle && (victim == nil || t.used.Before(victim.used)) {
			victimToken, victim = token, t
		}
		t.mu.Unlock()
	}
	if victim != nil {
		victim.mu.Lock()
		b.removeLocked(sh, victimToken, victim)
		victim.mu.Unlock()
		b.evictions.Add(1)
	}
}

// removeLocked drops a topic; both the shard and the topic are locked.
func (b *MemoryBackplane) removeLocked(sh *memoryShard, token string, t *memoryTopic) {
	delete(sh.topics, token)
	t.dead = true
	for len(t.entries) > t.head {
		b.dropOldest(t)
	}
	b.tokens.Add(-1)
	b.bytes.Add(-topicSize(token))
}

func (b *MemoryBackplane) Publish(_ context.Context, batch []*Message) (PublishResult, error) {
	if len(batch) == 0 {
		return PublishResult{}, nil
	}
	first := batch[0]
	t := b.topic(first.Token, true)
	res, over := b.publishLocked(t, batch)
	t.mu.Unlock()
	if over {
		// One publisher reclaims; the others go on unless the history is
		// far over its budget, so that a reclaim never delays everyone.
		b.reclaimBytes(b.opts.MaxBytes/10*9, b.bytes.Load() > b.opts.MaxBytes+b.opts.MaxBytes/10)
	}
	return res, nil
}

// publishLocked assigns seqs to batch, keeps it in t's history and hands
// it to t's subscribers; it reports whether the history is now over its
// byte budget. t is locked.
func (b *MemoryBackplane) publishLocked(t *memoryTopic, batch []*Message) (PublishResult, bool) {
	first := batch[0]
	now := b.now()
	b.expire(t, now)
	var idKey string
	if first.ID != "" && b.opts.Size > 0 {
		idKey = first.From + "\x00" + first.ID
		if seq, ok := t.ids[idKey]; ok {
			return PublishResult{Seq: seq, Duplicate: true}, false
		}
	}
	for _, m := range batch {
		t.seq++
		m.Seq = t.seq
		if b.opts.Size > 0 {
			b.retain(t, m, now)
		} else {
			t.evicted = t.seq
		}
		for _, d := range t.subs {
			d.Deliver(m)
		}
	}
	if idKey != "" {
		if t.ids == nil {
			t.ids = make(map[string]uint64)
		}
		t.ids[idKey] = t.seq
		// The id lives as long as the batch's last message is retained.
		e := &t.entries[len(t.entries)-1]
		e.idKey = idKey
		e.size += idSize(idKey)
		t.bytes += idSize(idKey)
		b.bytes.Add(idSize(idKey))
	}
	if b.opts.Size > 0 {
		b.trimToken(t)
	}
	t.used = now
	return PublishResult{Seq: t.seq}, b.bytes.Load() > b.opts.MaxBytes
}

// retain appends m to t's history and trims it to the configured bounds.
func (b *MemoryBackplane) retain(t *memoryTopic, m *Message, now time.Time) {
	size := retainedSize(m)
	t.entries = append(t.entries, historyEntry{m: m, at: now, size: size})
	t.bytes += size
	b.bytes.Add(size)
	b.messages.Add(1)
	for len(t.entries)-t.head > b.opts.Size {
		b.dropOldest(t)
	}
}

// trimToken drops t's oldest messages while it holds more than
// history.max_token_bytes, keeping its newest: one token cannot take the
// history of all the others (the Redis backplane keeps the same bound).
func (b *MemoryBackplane) trimToken(t *memoryTopic) {
	if b.opts.MaxTokenBytes <= 0 {
		return
	}
	for t.bytes > b.opts.MaxTokenBytes && len(t.entries)-t.head > 1 {
		b.dropOldest(t)
		b.trimmed.Add(1)
	}
}

func (b *MemoryBackplane) dropOldest(t *memoryTopic) {
	e := &t.entries[t.head]
	t.evicted = e.m.Seq
	if e.idKey != "" {
		delete(t.ids, e.idKey)
	}
	t.bytes -= e.size
	b.bytes.Add(-e.size)
	b.messages.Add(-1)
	*e = historyEntry{}
	t.head++
	// Reclaim the dead prefix once it is half the slice.
	if t.head > 32 && t.head*2 >= len(t.entries) {
		t.entries = append(t.entries[:0], t.entries[t.head:]...)
		t.head = 0
	}
}

// expire drops t's messages older than the TTL.
func (b *MemoryBackplane) expire(t *memoryTopic, now time.Time) {
	cutoff := now.Add(-b.opts.TTL)
	for len(t.entries) > t.head && t.entries[t.head].at.Before(cutoff) {
		b.dropOldest(t)
	}
}

func (b *MemoryBackplane) Seen(_ context.Context, token, from, id string) (uint64, bool, error) {
	if id == "" || b.opts.Size == 0 {
		return 0, false, nil
	}
	t := b.topic(token, false)
	if t == nil {
		return 0, false, nil
	}
	defer t.mu.Unlock()
	b.expire(t, b.now())
	seq, ok := t.ids[from+"\x00"+id]
	return seq, ok, nil
}

func (b *MemoryBackplane) Subscribe(token string, d Deliverer) func() {
	t := b.topic(token, true)
	t.subs = append(t.subs, d)
	t.used = b.now()
	t.mu.Unlock()
	return func() { b.unsubscribe(token, d) }
}

func (b *MemoryBackplane) unsubscribe(token string, d Deliverer) {
	t := b.topic(token, false)
	if t == nil {
		return
	}
	defer t.mu.Unlock()
	for i, sub := range t.subs {
		if sub == d {
			t.subs = append(t.subs[:i], t.subs[i+1:]...)
			break
		}
	}
	t.used = b.now()
}

func (b *MemoryBackplane) Join(_ context.Context, req JoinRequest) (JoinResult, error) {
	t := b.topic(req.Token, true)
	defer t.mu.Unlock()
	prev, held := t.owners[req.Env]
	switch {
	case held && req.Reject:
		return JoinResult{}, ErrEnvTaken
	case !held && req.MaxEnvs > 0 && len(t.owners) >= req.MaxEnvs:
		return JoinResult{}, ErrTokenFull
	}
	if t.owners == nil {
		t.owners = make(map[string]string, 2)
	}
	t.owners[req.Env] = req.Session
	t.used = b.now()
	t.claims++
	res := JoinResult{Replaced: prev, Epoch: t.claims, Peers: make([]string, 0, len(t.owners))}
	for env := range t.owners {
		if env != req.Env {
			res.Peers = append(res.Peers, env)
		}
	}
	e := Event{Kind: EventJoin, Env: req.Env, Session: req.Session, Replaced: held, Epoch: t.claims}
	for _, d := range t.subs {
		d.Event(e)
	}
	return res, nil
}

func (b *MemoryBackplane) Leave(_ context.Context, token, env, session string) error {
	t := b.topic(token, false)
	if t == nil {
		return nil
	}
	defer t.mu.Unlock()
	if t.owners[env] != session {
		return nil
	}
	delete(t.owners, env)
	t.used = b.now()
	e := Event{Kind: EventLeave, Env: env, Session: session}
	for _, d := range t.subs {
		d.Event(e)
	}
	return nil
}

func (b *MemoryBackplane) History(_ context.Context, token string, since uint64, limit int) (HistoryResult, error) {
	t := b.topic(token, true)
	defer t.mu.Unlock()
	b.expire(t, b.now())
	res := HistoryResult{Last: t.seq}
	if since == 0 {
		// "Everything retained": complete only if nothing was ever lost.
		since = t.base
	}
	// since must lie in what this topic has assigned and not lost; a seq
	// from an earlier topic of the token, or from the future, cannot resume.
	res.Complete = since >= t.evicted && since <= t.seq
	live := t.entries[t.head:]
	// Binary search: entries are in seq order.
	lo, hi := 0, len(live)
	for lo < hi {
		mid := (lo + hi) / 2
		if live[mid].m.Seq <= since {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	live = live[lo:]
	if limit > 0 && len(live) > limit {
		live = live[:limit]
	}
	res.Messages = make([]*Message, 0, len(live))
	for _, e := range live {
		res.Messages = append(res.Messages, e.m)
	}
	return res, nil
}

// janitor forgets tokens whose history expired and that nobody holds.
func (b *MemoryBackplane) janitor() {
	defer close(b.done)
	interval := b.opts.TTL / 4
	if interval > 30*time.Second {
		interval = 30 * time.Second
	}
	if interval < 10*time.Millisecond {
		interval = 10 * time.Millisecond
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		}
		now := b.now()
		for i := range b.shards {
			sh := &b.shards[i]
			sh.mu.Lock()
			for token, t := range sh.topics {
				t.mu.Lock()
				b.expire(t, now)
				if len(t.subs) == 0 && len(t.owners) == 0 && len(t.entries) == t.head && now.Sub(t.used) > b.opts.TTL {
					b.removeLocked(sh, token, t)
				}
				t.mu.Unlock()
			}
			sh.mu.Unlock()
		}
	}
}

func (b *MemoryBackplane) Close() error {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
	return nil
}
