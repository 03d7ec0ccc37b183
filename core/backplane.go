package core

import (
	"context"
	"hash/maphash"
	"sync"
)

// Backplane carries accepted messages to every relay instance that holds a
// session of the message's token. It owns per-token ordering: Publish
// assigns seq, and every subscriber of a token sees its messages in seq order.
type Backplane interface {
	// Publish assigns m.Seq and delivers m to the token's subscribers.
	Publish(ctx context.Context, m *Message) error
	// Subscribe registers d for messages of token until unsubscribe is called.
	Subscribe(token string, d Deliverer) (unsubscribe func())
	// LastSeq is the newest seq assigned for token (0 if none).
	LastSeq(ctx context.Context, token string) (uint64, error)
	Close() error
}

// Deliverer receives a token's messages from the backplane. Deliver must not
// block: it runs while the backplane holds the token's ordering.
type Deliverer interface {
	Deliver(m *Message)
}

// MemoryBackplane is the single-instance backplane: delivery is a function call.
type MemoryBackplane struct {
	seed   maphash.Seed
	shards [64]memoryShard
}

type memoryShard struct {
	mu     sync.Mutex
	topics map[string]*memoryTopic
}

type memoryTopic struct {
	mu   sync.Mutex
	seq  uint64
	subs []Deliverer
}

// NewMemoryBackplane returns an empty in-process backplane.
func NewMemoryBackplane() *MemoryBackplane {
	b := &MemoryBackplane{seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].topics = make(map[string]*memoryTopic)
	}
	return b
}

func (b *MemoryBackplane) shard(token string) *memoryShard {
	return &b.shards[maphash.String(b.seed, token)%uint64(len(b.shards))]
}

func (b *MemoryBackplane) topic(token string, create bool) *memoryTopic {
	s := b.shard(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[token]
	if t == nil && create {
		t = &memoryTopic{}
		s.topics[token] = t
	}
	return t
}

func (b *MemoryBackplane) Publish(_ context.Context, m *Message) error {
	t := b.topic(m.Token, true)
	t.mu.Lock()
	t.seq++
	m.Seq = t.seq
	for _, d := range t.subs {
		d.Deliver(m)
	}
	t.mu.Unlock()
	return nil
}

func (b *MemoryBackplane) Subscribe(token string, d Deliverer) func() {
	t := b.topic(token, true)
	t.mu.Lock()
	t.subs = append(t.subs, d)
	t.mu.Unlock()
	return func() { b.unsubscribe(token, d) }
}

func (b *MemoryBackplane) unsubscribe(token string, d Deliverer) {
	s := b.shard(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.topics[token]
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, sub := range t.subs {
		if sub == d {
			t.subs = append(t.subs[:i], t.subs[i+1:]...)
			break
		}
	}
	// Without history there is nothing left worth keeping for the token; a
	// later topic restarts at seq 1 and clients learn it from relay.hello.
	if len(t.subs) == 0 {
		delete(s.topics, token)
	}
}

func (b *MemoryBackplane) LastSeq(_ context.Context, token string) (uint64, error) {
	t := b.topic(token, false)
	if t == nil {
		return 0, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seq, nil
}

func (b *MemoryBackplane) Close() error { return nil }
