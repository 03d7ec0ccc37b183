package core

import (
	"context"
	"sync"
)

// A joining session catches up from the history a page at a time, as its
// writer drains: a gap far larger than the send queue can be resumed as
// long as the history still covers it, and the session holds at most one
// page. Live messages wait in pending meanwhile; they are in the history
// too, so when pending fills up they are dropped and the history is read
// once more, until a read reaches the newest seq with pending intact.

// replay is a session's catch-up from the history; its fields are guarded
// by the session's mu.
type replay struct {
	cursor   uint64     // newest seq read from the history
	buf      []*Message // read, not yet queued
	caughtUp bool       // the last read reached the newest seq there was
	room     sync.Cond  // signalled when the writer takes the queue or the session closes
	running  bool       // a goroutine reads further pages
	done     sync.WaitGroup
}

// historyPage is how many messages one history read asks for.
func (s *Session) historyPage() int {
	return max(1, min(s.hub.cfg.Limits.SendQueue/2, 128))
}

// startReplay queues relay.hello (v1) and the system frames that came
// during the join, then the first page of the history (hist, which the
// join read; no messages when the session does not resume), and goes on
// reading pages on a goroutine of its own while there is more.
func (s *Session) startReplay(hello []byte, hist HistoryResult, limit int) {
	s.mu.Lock()
	r := &replay{}
	r.room.L = &s.mu
	s.replay = r
	overflow := false
	if hello != nil {
		overflow = s.enqueueLocked(outFrame{data: hello, op: opText})
	}
	messages := s.pending[:0]
	for _, p := range s.pending {
		if p.m != nil {
			messages = append(messages, p)
		} else if !overflow {
			overflow = s.enqueueLocked(outFrame{data: p.frame, op: opText})
		}
	}
	clear(s.pending[len(messages):])
	s.pending = messages
	r.read(hist, limit)
	if !overflow {
		overflow = s.fillLocked()
	}
	if s.resuming && !overflow && !s.closing {
		r.running = true
		r.done.Add(1)
		go s.readHistory()
	}
	s.mu.Unlock()
	if overflow {
		s.slowConsumer()
	}
}

// read takes in one history read that started after r.cursor.
func (r *replay) read(hist HistoryResult, limit int) {
	r.buf = hist.Messages
	if n := len(hist.Messages); limit > 0 && n >= limit && hist.Messages[n-1].Seq < hist.Last {
		r.cursor, r.caughtUp = hist.Messages[n-1].Seq, false
	} else {
		r.cursor, r.caughtUp = hist.Last, true
	}
}

// roomLocked reports whether the queue can take more of the replay: it
// keeps half of it free for live system frames (acks, presence).
func (s *Session) roomLocked(next int) bool {
	limits := &s.hub.cfg.Limits
	return len(s.queue) == 0 || (len(s.queue) < limits.SendQueue/2 && s.queued+next <= limits.SendQueueBytes/2)
}

// fillLocked queues what the replay has read while there is room, and
// once it reached the newest seq, what pending holds, the same way; the
// catch-up ends when both are queued. When pending dropped messages, the
// history is read again from the cursor instead. It reports whether the
// queue overflowed.
func (s *Session) fillLocked() (overflow bool) {
	r := s.replay
	for len(r.buf) > 0 {
		m := r.buf[0]
		if !m.Addressed(s.env) {
			r.buf[0], r.buf = nil, r.buf[1:]
			continue
		}
		frame := s.encode(m)
		if !s.roomLocked(len(frame)) {
			return false
		}
		r.buf[0], r.buf = nil, r.buf[1:]
		if s.enqueueLocked(outFrame{data: frame, op: opText}) {
			return true
		}
	}
	if !r.caughtUp {
		return false
	}
	if s.pendingLost {
		clear(s.pending)
		s.pending, s.pendingLost, r.caughtUp = s.pending[:0], false, false
		return false
	}
	if len(s.pending) == 0 {
		s.resuming = false // the next live message goes straight to the queue
		return false
	}
	// What arrived live meanwhile is queued like the history before it,
	// as the writer drains, and the catch-up ends once nothing is left.
	for _, p := range s.pending {
		if p.m.Seq > r.cursor {
			r.buf = append(r.buf, p.m)
			r.cursor = p.m.Seq
		}
	}
	clear(s.pending)
	s.pending = s.pending[:0]
	return s.fillLocked()
}

// wakeReplayLocked tells a replay waiting for room that the queue changed
// or the session is closing.
func (s *Session) wakeReplayLocked() {
	if r := s.replay; r != nil && r.running {
		r.room.Signal()
	}
}

// readHistory reads further pages of the history and queues them as the
// writer drains, until the session caught up or closes.
func (s *Session) readHistory() {
	r := s.replay
	defer r.done.Done()
	closeCode := 0
	s.mu.Lock()
	for s.resuming && !s.closing && closeCode == 0 {
		if len(r.buf) > 0 || r.caughtUp {
			if s.fillLocked() {
				closeCode = CloseSlowConsumer
			} else if s.resuming && len(r.buf) > 0 {
				r.room.Wait()
			}
			continue
		}
		cursor := r.cursor
		s.mu.Unlock()
		hist, err := s.hub.bp.History(context.Background(), s.token, cursor, s.historyPage())
		s.mu.Lock()
		switch {
		case err != nil:
			s.log().Error("backplane unavailable while resuming", "token", s.tokenHash, "err", err)
			closeCode = CloseRestarting
		case !hist.Complete:
			// The history moved past what this client has read: it must
			// reconnect and learn from relay.hello that it cannot resume.
			s.log().Info("history evicted during a resume", "token", s.tokenHash, "env", s.env)
			closeCode = CloseSlowConsumer
		default:
			r.read(hist, s.historyPage())
		}
	}
	r.running = false
	s.mu.Unlock()
	if closeCode == CloseSlowConsumer {
		s.slowConsumer()
	} else if closeCode != 0 {
		s.closeWith(closeCode)
	}
}
