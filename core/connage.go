package core

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pairrelay/relay/config"
)

// Connection age (limits.max_connection_age): platforms such as Cloud Run
// cut every request, a WebSocket included, at their request timeout. relay
// closes each session a little before that with 4012, after what is queued
// for it, so that the client reconnects at once and resumes instead of
// meeting a cut socket (1006) and backing off. Each session's age is drawn
// from [age × (1 − jitter), age], so that sessions opened together (after
// a deploy) do not all come back at the same instant.
//
// One wheel and one ticker serve every session: a session costs two small
// integers in the padding of its struct and a pointer in a slot, not a
// timer of its own.

// ageWheelSlots is how many ticks an age spans: the tick, and so the
// precision of a close, is age/ageWheelSlots (never under minAgeTick).
const (
	ageWheelSlots = 1024
	minAgeTick    = 10 * time.Millisecond
)

type ageWheel struct {
	tick   time.Duration
	lower  time.Duration // the shortest age drawn
	spread time.Duration // ages are drawn from [lower, lower+spread]
	start  time.Time
	// draw returns a number in [0, n); tests replace it before any session.
	draw func(n int64) int64

	mu sync.Mutex
	// next is the tick the wheel fires next. Slot i of the ring holds the
	// sessions due at the tick in [next, next+len(slots)) that is ≡ i
	// modulo len(slots).
	next  int64
	slots [][]*Session
}

// newAgeWheel returns the wheel for l, nil when connections have no age limit.
func newAgeWheel(l *config.Limits) *ageWheel {
	age := l.MaxConnectionAge
	if age <= 0 {
		return nil
	}
	spread := time.Duration(float64(age) * min(max(l.MaxConnectionAgeJitter, 0), 1))
	tick := max(age/ageWheelSlots, minAgeTick)
	return &ageWheel{
		tick: tick, lower: age - spread, spread: spread, start: time.Now(), draw: rand.Int64N,
		// One slot more than an age spans, and one for the rounding.
		slots: make([][]*Session, int(age/tick)+2),
	}
}

// add puts s on the wheel: it is closed once its drawn age, counted from
// born, is up (at the last tick before it: never later).
func (w *ageWheel) add(s *Session, born time.Time) {
	age := w.lower
	if w.spread > 0 {
		age += time.Duration(w.draw(int64(w.spread) + 1))
	}
	due := int64(born.Add(age).Sub(w.start) / w.tick)
	n := int64(len(w.slots))
	w.mu.Lock()
	defer w.mu.Unlock()
	// Past ticks fire with the next one; a wheel that fell behind (a stalled
	// process) must not see a due tick a whole turn ahead, which would land
	// in a slot that fires too early.
	due = min(max(due, w.next), w.next+n-1)
	i := due % n
	w.slots[i] = append(w.slots[i], s)
	s.ageSlot, s.ageIdx = uint16(i+1), uint32(len(w.slots[i])-1)
}

// remove takes s off the wheel (a session that ended), so that the wheel
// holds no session longer than it lives.
func (w *ageWheel) remove(s *Session) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.ageSlot == 0 {
		return
	}
	slot := &w.slots[s.ageSlot-1]
	last := len(*slot) - 1
	moved := (*slot)[last]
	(*slot)[s.ageIdx] = moved
	moved.ageIdx = s.ageIdx
	(*slot)[last] = nil
	*slot = (*slot)[:last]
	s.ageSlot = 0
}

// advance takes off the wheel, and appends to due, every session whose
// tick has come by now.
func (w *ageWheel) advance(now time.Time, due []*Session) []*Session {
	cur := int64(now.Sub(w.start) / w.tick)
	w.mu.Lock()
	defer w.mu.Unlock()
	// After a stall longer than a turn, one turn fires every slot.
	for turn := 0; w.next <= cur && turn < len(w.slots); turn++ {
		slot := &w.slots[w.next%int64(len(w.slots))]
		for _, s := range *slot {
			s.ageSlot = 0
			due = append(due, s)
		}
		// Dropped rather than reused: a burst of connections must not pin
		// its slots' capacity for good.
		*slot = nil
		w.next++
	}
	w.next = max(w.next, cur+1)
	return due
}

// run closes the sessions whose age is up, every tick, until ctx ends.
func (w *ageWheel) run(ctx context.Context) {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	var due []*Session
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			due = w.advance(time.Now(), due[:0])
			for _, s := range due {
				s.ageReached()
			}
			clear(due)
		}
	}
}

// ageReached closes s, after what is already queued for it, with 4012.
func (s *Session) ageReached() {
	s.log().Debug("connection age reached", "session", s.id, "token", s.tokenHash, "env", s.env)
	s.closeWith(CloseMaxAge)
}
