package core

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/pairrelay/relay/config"
)

// Hub holds this instance's sessions, grouped by token into rooms, and
// connects them to the backplane.
type Hub struct {
	cfg      *config.Config
	log      *slog.Logger
	bp       Backplane
	batch    BatchPublisher // bp, when it publishes batches cheaper than messages one by one
	metrics  *Metrics
	pipeline atomic.Pointer[Pipeline]

	seed     maphash.Seed
	shards   [64]hubShard
	open     atomic.Int64 // upgrades admitted by the guard and not yet ended
	queues   queueBudget  // bytes queued for all sessions together
	ages     *ageWheel    // closes sessions at limits.max_connection_age; nil without one
	nextID   atomic.Uint64
	instance string

	refusalLog *rate.Limiter // refusal log lines of all sessions together; see Session.mayLog
	unlogged   atomic.Int64  // refusals of ended sessions whose count line was left out too
}

type hubShard struct {
	mu    sync.Mutex
	rooms map[string]*room
}

// room is the set of this instance's sessions of one token, one per env.
type room struct {
	token       string
	mu          sync.Mutex
	sessions    map[string]*Session
	epochs      map[string]uint64 // newest claim seen per env; older ones lose
	joining     map[*Session]bool // sessions between claiming and placing: they hear presence already
	unsubscribe func()
}

// NewHub returns a hub relaying through bp.
func NewHub(cfg *config.Config, log *slog.Logger, bp Backplane, metrics *Metrics) *Hub {
	h := &Hub{cfg: cfg, log: log, bp: bp, metrics: metrics, seed: maphash.MakeSeed(),
		instance:   strconv.FormatUint(rand.Uint64()&0xffffff, 36),
		refusalLog: rate.NewLimiter(processRefusalLogRate, processRefusalLogBurst)}
	for i := range h.shards {
		h.shards[i].rooms = make(map[string]*room)
	}
	h.batch, _ = bp.(BatchPublisher)
	h.ages = newAgeWheel(&cfg.Limits)
	h.pipeline.Store(&Pipeline{})
	return h
}

// SetPipeline swaps the routing pipeline atomically and returns the old
// one: messages already inside it finish there; Retire it to close it.
func (h *Hub) SetPipeline(p *Pipeline) *Pipeline { return h.pipeline.Swap(p) }

// enterPipeline returns the current pipeline with one more message in flight.
func (h *Hub) enterPipeline() *Pipeline {
	for {
		if p := h.pipeline.Load(); p.enter() {
			return p
		}
	}
}

func (h *Hub) shard(token string) *hubShard {
	return &h.shards[maphash.String(h.seed, token)%uint64(len(h.shards))]
}

// join adds s to its token's room, claims its token+env across instances
// and catches it up: relay.hello (v1) comes first, then what it missed
// since its since (when it gave one), then live traffic. It returns a close
// code when s may not join (0 otherwise).
func (h *Hub) join(s *Session, since *uint64) int {
	sh := h.shard(s.token)
	sh.mu.Lock()
	r := sh.rooms[s.token]
	if r == nil {
		r = &room{token: s.token, sessions: make(map[string]*Session, 2), epochs: make(map[string]uint64, 2),
			joining: make(map[*Session]bool)}
		r.unsubscribe = h.bp.Subscribe(s.token, r)
		sh.rooms[s.token] = r
	}
	r.mu.Lock()
	if r.sessions[s.env] != nil && h.cfg.OnDuplicate == config.DuplicateReject {
		r.mu.Unlock()
		sh.mu.Unlock()
		return CloseDuplicateEnv
	}
	// A joining session keeps the room (and its subscription) and hears
	// presence changes and messages in its s.pending until the catch-up
	// below (see replay.go).
	s.resuming = true
	r.joining[s] = true
	r.mu.Unlock()
	sh.mu.Unlock()

	ctx := context.Background()
	joined, err := h.bp.Join(ctx, JoinRequest{Token: s.token, Env: s.env, Session: s.id,
		Reject: h.cfg.OnDuplicate == config.DuplicateReject, MaxEnvs: h.cfg.Limits.MaxConnectionsPerToken})
	if err != nil {
		r.mu.Lock()
		delete(r.joining, s)
		r.mu.Unlock()
		h.dropRoomIfEmpty(s.token, r)
		switch {
		case errors.Is(err, ErrEnvTaken):
			return CloseDuplicateEnv
		case errors.Is(err, ErrTokenFull):
			return CloseTokenFull
		}
		s.log().Error("backplane unavailable on join", "token", s.tokenHash, "err", err)
		return CloseRestarting
	}
	if joined.Replaced != "" {
		h.metrics.replacements.Inc()
		s.log().Info("session replaced", "token", s.tokenHash, "env", s.env, "old", joined.Replaced, "new", s.id)
	}
	if !r.place(s, joined.Epoch) {
		h.dropRoomIfEmpty(s.token, r)
		return CloseReplaced // an even newer connection won the race
	}

	from := uint64(math.MaxUint64) // live only: no replay, just the newest seq
	if since != nil {
		from = *since
	}
	page := s.historyPage()
	hist, err := h.bp.History(ctx, s.token, from, page)
	if err != nil {
		s.log().Error("backplane unavailable on join", "token", s.tokenHash, "err", err)
		h.leave(s)
		return CloseRestarting
	}
	resumed := since != nil && hist.Complete
	if since != nil {
		h.metrics.resumes.WithLabelValues(strconv.FormatBool(resumed)).Inc()
	}
	if !resumed {
		hist.Messages, page = nil, 0
	}
	var hello []byte
	if s.wire == wireV1 {
		hello = helloFrame(helloData{
			Session: s.id, Env: s.env, Peers: joined.Peers, Seq: hist.Last, Resumed: resumed,
			Heartbeat: h.cfg.Heartbeat.Interval.Milliseconds(),
			Limits: helloLimits{MessagesPerSecond: h.cfg.Limits.MessagesPerSecond, Burst: h.cfg.Limits.Burst,
				MaxFrameBytes: h.cfg.Limits.MaxFrameBytes},
		})
	}
	s.startReplay(hello, hist, page)
	return 0
}

// place makes s its env's session in the room unless a newer claim (a
// higher epoch, from this instance or another) already arrived; whatever
// older session held the env is closed as replaced.
func (r *room) place(s *Session, epoch uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.joining, s)
	if epoch < r.epochs[s.env] {
		return false
	}
	if cur := r.sessions[s.env]; cur != nil && cur != s {
		cur.closeWith(CloseReplaced)
	}
	r.sessions[s.env] = s
	r.epochs[s.env] = epoch
	s.room = r
	return true
}

// leave removes s from its room unless a newer session already took its
// place, and gives up its claim.
func (h *Hub) leave(s *Session) {
	r := s.room
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.sessions[s.env] == s {
		delete(r.sessions, s.env)
	}
	r.mu.Unlock()
	if err := h.bp.Leave(context.Background(), s.token, s.env, s.id); err != nil {
		s.log().Warn("backplane: leave failed; presence expires on its own", "token", s.tokenHash, "err", err)
	}
	h.dropRoomIfEmpty(s.token, r)
}

// dropRoomIfEmpty forgets r and its subscription once no session is in it.
func (h *Hub) dropRoomIfEmpty(token string, r *room) {
	sh := h.shard(token)
	sh.mu.Lock()
	r.mu.Lock()
	var unsubscribe func()
	if len(r.sessions) == 0 && len(r.joining) == 0 && sh.rooms[token] == r {
		delete(sh.rooms, token)
		unsubscribe = r.unsubscribe
	}
	r.mu.Unlock()
	sh.mu.Unlock()
	if unsubscribe != nil {
		unsubscribe()
	}
}

// Event applies a presence change of the token, from any instance: a
// session of the env that is not the one that joined has been replaced,
// and the others hear of envs coming and going (but not of replacements).
func (r *room) Event(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Kind == EventJoin {
		if e.Epoch > r.epochs[e.Env] {
			r.epochs[e.Env] = e.Epoch
			if s := r.sessions[e.Env]; s != nil && s.id != e.Session {
				delete(r.sessions, e.Env)
				s.closeWith(CloseReplaced)
			}
		}
		if e.Replaced {
			return
		}
	}
	r.announceLocked(e.Env, e.Kind == EventJoin)
}

// announceLocked tells the room's other v1 sessions, joining ones too,
// that env came or went.
func (r *room) announceLocked(env string, online bool) {
	var frame []byte
	tell := func(peer *Session) {
		if peer.env == env || peer.wire != wireV1 {
			return
		}
		if frame == nil {
			frame = presenceFrame(env, online)
		}
		peer.sendText(frame)
	}
	for _, peer := range r.sessions {
		tell(peer)
	}
	for peer := range r.joining {
		tell(peer)
	}
}

// Deliver hands m to the room's sessions it is addressed to, encoding each
// wire's frame once.
func (r *room) Deliver(m *Message) {
	var v1, seed []byte
	r.mu.Lock()
	defer r.mu.Unlock()
	for env, s := range r.sessions {
		if !m.Addressed(env) {
			continue
		}
		if s.wire == wireV1 {
			if v1 == nil {
				v1 = s.encode(m)
			}
			s.push(m, v1)
		} else {
			if seed == nil {
				seed = s.encode(m)
			}
			s.push(m, seed)
		}
	}
}

// accept runs m through the pipeline and publishes what comes out, once:
// a client id already accepted is acked again but not relayed again. With
// a BatchPublisher the session's publisher publishes and answers it, in
// order with the messages before it (see Session.queuePublish).
func (h *Hub) accept(s *Session, m *Message) {
	it := h.route(s, m)
	if h.batch != nil {
		s.queuePublish(it)
		return
	}
	s.keepOrder(&it)
	if !it.publish {
		s.single[0] = nil
		s.answer(&it, nil)
		return
	}
	res, err := h.bp.Publish(context.Background(), it.out)
	s.single[0] = nil
	s.answer(&it, &BatchResult{PublishResult: res, Err: err})
}

// route runs m through the current pipeline; what comes out is to be
// published, or only answered.
func (h *Hub) route(s *Session, m *Message) pubItem {
	ctx := context.Background()
	p := h.enterPipeline()
	// The pipeline is done with m once it has run: a reload need not wait
	// for the publish.
	defer p.exit()
	if p.Empty() {
		if h.batch == nil {
			// The common case: no routes, and Publish alone dedupes. Only
			// this session's reader uses single.
			s.single[0] = m
			return pubItem{id: m.ID, out: s.single[:], publish: true}
		}
	} else if m.ID != "" {
		// A repeat must not run the routes again (a webhook would be
		// called twice); Publish still has the final word, also on a
		// repeat still waiting in a publisher's queue.
		if seq, ok, err := h.bp.Seen(ctx, m.Token, m.From, m.ID); err == nil && ok {
			h.metrics.drops.WithLabelValues("duplicate").Inc()
			return pubItem{id: m.ID, seq: seq}
		}
	}
	out, route, err := p.Process(ctx, m)
	if err != nil {
		return pubItem{id: m.ID, route: route, refusal: asClientError(err)}
	}
	return pubItem{id: m.ID, route: route, out: out, publish: true}
}

// heartbeat pings every session each interval until ctx ends.
func (h *Hub) heartbeat(ctx context.Context) {
	t := time.NewTicker(h.cfg.Heartbeat.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.each(func(s *Session) { s.enqueue(outFrame{op: opPing}) })
		}
	}
}

// each calls fn for every session, holding no lock fn could need.
func (h *Hub) each(fn func(*Session)) {
	var batch []*Session
	for i := range h.shards {
		sh := &h.shards[i]
		batch = batch[:0]
		sh.mu.Lock()
		for _, r := range sh.rooms {
			r.mu.Lock()
			for _, s := range r.sessions {
				batch = append(batch, s)
			}
			r.mu.Unlock()
		}
		sh.mu.Unlock()
		for _, s := range batch {
			fn(s)
		}
	}
}

func (h *Hub) newSessionID() string {
	return h.instance + "-" + strconv.FormatUint(h.nextID.Add(1), 36)
}

// newRef names one refusal in both the relay.error frame and the log line.
func newRef() string {
	return strconv.FormatUint(rand.Uint64()>>16, 36)
}

// hashToken is how a token appears in logs: never in clear.
func hashToken(token string) string { return TokenID(token) }

func closeCodeLabel(code int) string { return strconv.Itoa(code) }
