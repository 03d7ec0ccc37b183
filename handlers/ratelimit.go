package handlers

import (
	"container/list"
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/pairrelay/relay/core"
)

func init() {
	core.RegisterHandler(core.HandlerSpec{
		Name:    "rate_limit",
		Summary: "Limits how many messages pass per second, per token, per sender or per route (token bucket).",
		New: func() core.Handler {
			return &RateLimit{Per: perToken, Action: actionReject, MaxKeys: 100000}
		},
	})
}

// RateLimit lets messages through a token bucket per key.
type RateLimit struct {
	Rate    float64 `yaml:"rate" doc:"Messages per second allowed in the long run (a fraction such as 0.5 is fine). Required, more than 0."`
	Burst   int     `yaml:"burst" doc:"Messages that may pass at once after a quiet period (the bucket's size). 0: rate rounded up, at least 1."`
	Per     string  `yaml:"per" doc:"What shares a bucket: token (every env of a pair together), session (one sender: a handler sees no connection, so this keys by token and from env, which a reconnecting client keeps) or route (every message of the route)." default:"token"`
	Action  string  `yaml:"action" doc:"What happens to a message over the limit: reject (the sender gets relay.error rate_limited) or drop (silently)." default:"reject"`
	MaxKeys int     `yaml:"max_keys" doc:"Most buckets kept (per token or session). Idle buckets, full again for over a minute, are removed as messages flow; past max_keys the least recently used goes first (that key starts again with a full bucket)." default:"100000"`

	limiter *rate.Limiter // per: route
	shards  []rateShard
	seed    maphash.Seed
	idle    time.Duration // a bucket untouched this long is full again and can go
	now     func() time.Time
}

const (
	perToken   = "token"
	perSession = "session"
	perRoute   = "route"

	rateShards  = 16
	idleAfter   = time.Minute // a bucket full for this long is forgotten
	trimPerCall = 8           // idle buckets removed, at most, per message
)

type rateShard struct {
	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // front: most recently used
	max     int
}

type bucket struct {
	key  string
	lim  *rate.Limiter
	last time.Time
}

// Validate checks the settings.
func (r *RateLimit) Validate() error {
	switch {
	case !(r.Rate > 0) || math.IsInf(r.Rate, 0):
		return fmt.Errorf("rate: must be more than 0 messages per second, got %v", r.Rate)
	case r.Burst < 0:
		return fmt.Errorf("burst: must be 0 or more, got %d", r.Burst)
	case r.Per != perToken && r.Per != perSession && r.Per != perRoute:
		return fmt.Errorf("per: must be token, session or route, got %q", r.Per)
	case r.Action != actionReject && r.Action != actionDrop:
		return fmt.Errorf("action: must be reject or drop, got %q", r.Action)
	case r.MaxKeys < 1:
		return fmt.Errorf("max_keys: must be 1 or more, got %d", r.MaxKeys)
	}
	return nil
}

// Provision sets up the buckets.
func (r *RateLimit) Provision(context.Context, core.ProvisionEnv) error {
	if err := r.Validate(); err != nil {
		return err // nothing to set up with these settings
	}
	if r.Burst == 0 {
		r.Burst = max(1, int(math.Ceil(r.Rate)))
	}
	r.now = time.Now
	// A bucket refills completely in burst/rate; after idleAfter more it has
	// been full long enough to be forgotten.
	r.idle = time.Duration(float64(r.Burst)/r.Rate*float64(time.Second)) + idleAfter
	if r.Per == perRoute {
		r.limiter = rate.NewLimiter(rate.Limit(r.Rate), r.Burst)
		return nil
	}
	r.seed = maphash.MakeSeed()
	r.shards = make([]rateShard, rateShards)
	per := (r.MaxKeys + rateShards - 1) / rateShards
	for i := range r.shards {
		r.shards[i].buckets = make(map[string]*list.Element)
		r.shards[i].max = per
	}
	return nil
}

// Handle passes the message if its bucket has a token left.
func (r *RateLimit) Handle(_ context.Context, m *core.Message) ([]*core.Message, error) {
	if r.allow(m, r.now()) {
		return []*core.Message{m}, nil
	}
	if r.Action == actionDrop {
		return nil, nil
	}
	return nil, core.Reject(core.ErrRateLimited, "too many messages: at most %g per second (bursts of %d)", r.Rate, r.Burst)
}

func (r *RateLimit) allow(m *core.Message, now time.Time) bool {
	if r.limiter != nil {
		return r.limiter.AllowN(now, 1)
	}
	key := m.Token
	if r.Per == perSession {
		key = m.Token + "\x00" + m.From
	}
	s := &r.shards[maphash.String(r.seed, key)%rateShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trim(now, r.idle, trimPerCall)
	var b *bucket
	if e, ok := s.buckets[key]; ok {
		b = e.Value.(*bucket)
		s.lru.MoveToFront(e)
	} else {
		if len(s.buckets) >= s.max {
			s.evict(s.lru.Back())
		}
		b = &bucket{key: key, lim: rate.NewLimiter(rate.Limit(r.Rate), r.Burst)}
		s.buckets[key] = s.lru.PushFront(b)
	}
	b.last = now
	return b.lim.AllowN(now, 1)
}

// trim forgets up to n buckets idle for longer than idle, oldest first.
func (s *rateShard) trim(now time.Time, idle time.Duration, n int) {
	for ; n > 0; n-- {
		e := s.lru.Back()
		if e == nil || now.Sub(e.Value.(*bucket).last) <= idle {
			return
		}
		s.evict(e)
	}
}

func (s *rateShard) evict(e *list.Element) {
	delete(s.buckets, e.Value.(*bucket).key)
	s.lru.Remove(e)
}

// keys counts the buckets held, for tests.
func (r *RateLimit) keys() int {
	n := 0
	for i := range r.shards {
		r.shards[i].mu.Lock()
		n += len(r.shards[i].buckets)
		r.shards[i].mu.Unlock()
	}
	return n
}

// NonBlocking: Handle only computes; the host needs no timeout for it.
func (*RateLimit) NonBlocking() {}
