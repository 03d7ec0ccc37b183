package redisbp

import (
	"sync"
	"time"
)

// idCacheSize bounds the client ids an instance remembers.
const idCacheSize = 1 << 16

// idCache remembers the client ids accepted through this instance, so that
// Seen can answer a repeat without asking Redis. It forgets the oldest
// first, and an id older than the history TTL counts as gone.
type idCache struct {
	mu    sync.Mutex
	m     map[idCacheKey]idCacheEntry
	order []idCacheKey // ring, oldest at next
	next  int
}

type idCacheKey struct{ token, idKey string }

type idCacheEntry struct {
	seq uint64
	at  time.Time
}

func newIDCache(size int) *idCache {
	return &idCache{m: make(map[idCacheKey]idCacheEntry, size), order: make([]idCacheKey, size)}
}

func (c *idCache) put(token, idKey string, seq uint64) {
	k := idCacheKey{token, idKey}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok {
		if old := c.order[c.next]; old != (idCacheKey{}) {
			delete(c.m, old)
		}
		c.order[c.next] = k
		c.next = (c.next + 1) % len(c.order)
	}
	c.m[k] = idCacheEntry{seq: seq, at: time.Now()}
}

func (c *idCache) get(token, idKey string, ttl time.Duration) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[idCacheKey{token, idKey}]
	if !ok || time.Since(e.at) >= ttl {
		return 0, false
	}
	return e.seq, true
}
