package core

import (
	"slices"
	"sync/atomic"
	"time"
)

// queueBudget bounds the bytes that the send queues of all sessions hold
// together (queued or being written), on top of each session's own cap.
// Counting is one atomic add per frame; only when the total passes the
// limit does a shedder look at the sessions, and it closes the ones that
// hold the most with 4008 (slow consumer) until the total is back under
// its low-water mark. A flood of slow readers thus costs its own
// connections, never the process.
type queueBudget struct {
	limit    atomic.Int64 // 0: no global bound
	bytes    atomic.Int64
	shedding atomic.Bool
	lastShed atomic.Int64 // unix nanos of the last shedding pass
	shed     atomic.Int64 // sessions closed to stay within the limit
}

// shedInterval keeps a total that stays over the limit (closed sessions
// release their bytes only once their writer gave up) from making every
// frame start a scan of all sessions.
const shedInterval = 20 * time.Millisecond

// add counts n more bytes queued, and starts a shedding pass when the
// total went over the limit. Past half as much again (shedding could not
// keep up) it takes the bytes back and reports false: a session that is
// already behind is then a slow consumer itself.
func (q *queueBudget) add(h *Hub, n int, behind bool) bool {
	if n == 0 {
		return true
	}
	total := q.bytes.Add(int64(n))
	if limit := q.limit.Load(); limit > 0 && total > limit {
		if behind && total > limit+limit/2 {
			q.bytes.Add(-int64(n))
			return false
		}
		q.trigger(h, limit)
	}
	return true
}

func (q *queueBudget) release(n int) {
	if n != 0 {
		q.bytes.Add(-int64(n))
	}
}

// trigger starts a shedding pass toward target unless one is running or
// one ran within shedInterval.
func (q *queueBudget) trigger(h *Hub, target int64) {
	if now := time.Now().UnixNano(); now-q.lastShed.Load() < int64(shedInterval) || !q.shedding.CompareAndSwap(false, true) {
		return
	} else {
		q.lastShed.Store(now)
	}
	go func() {
		defer q.shedding.Store(false)
		h.shedQueues(target)
	}()
}

// queueLowWater is the share of the limit a shedding pass brings the
// total down to, so that the next pass is not one frame away.
const queueLowWater = 0.75

// shedQueues closes the sessions holding the most queued bytes with 4008
// until what the others hold is within queueLowWater of limit.
func (h *Hub) shedQueues(limit int64) {
	type holder struct {
		s     *Session
		bytes int64
	}
	var holders []holder
	var closing int64 // bytes of sessions already closing: released soon
	h.each(func(s *Session) {
		s.mu.Lock()
		// What a writer stuck on a peer that does not read took from
		// the queue is held as well.
		n := int64(s.queued) + int64(s.inflight)
		gone := s.closing
		s.mu.Unlock()
		switch {
		case n == 0:
		case gone:
			closing += n
		default:
			holders = append(holders, holder{s, n})
		}
	})
	target := int64(float64(limit) * queueLowWater)
	total := h.queues.bytes.Load() - closing
	if total <= target {
		return
	}
	// The slowest consumers first: the most bytes waiting for them.
	slices.SortFunc(holders, func(a, b holder) int {
		switch {
		case a.bytes > b.bytes:
			return -1
		case a.bytes < b.bytes:
			return 1
		}
		return 0
	})
	for _, c := range holders {
		if total <= target {
			break
		}
		total -= c.bytes
		h.queues.shed.Add(1)
		h.metrics.drops.WithLabelValues("queue_budget").Inc()
		c.s.shed()
	}
}

// shed closes s because the relay's queues together are over budget: its
// backlog is dropped and a writer stuck on a peer that does not read gives
// up soon instead of after limits.write_timeout, so its bytes are released.
func (s *Session) shed() {
	s.closeWith(CloseSlowConsumer)
	_ = s.conn.NetConn().SetWriteDeadline(time.Now().Add(closeGrace))
}
