package core

import (
	"context"
	"errors"
	"strconv"
	"sync"
)

// publisher publishes a session's messages through a BatchPublisher. The
// reader runs the pipeline and queues the outcome; a goroutine that exists
// only while something is queued publishes everything queued in one call
// and answers each message in order, while the reader fills the other
// buffer. So a client that sends without waiting for acks has up to two
// queues of messages in flight instead of one message, and the backplane
// pays its per-call cost once per round rather than once per message.
type publisher struct {
	mu      sync.Mutex
	room    sync.Cond // signalled when the goroutine took the queue
	queue   []pubItem
	bytes   int
	running bool
	wg      sync.WaitGroup

	// The goroutine's own, reused from round to round.
	batches [][]*Message
	results []BatchResult
}

// pubItem is one client message waiting for its turn: to be published, or
// only to be answered, since answers leave in the order messages came in.
type pubItem struct {
	id      string
	route   string
	out     []*Message // what the pipeline made of it, when publish
	publish bool
	refusal *ClientError // refuse it (publish false)
	seq     uint64       // else ack it as a repeat of seq
}

// The queue's bounds: a reader with this much waiting blocks, which slows
// its client down to what the backplane takes. A single larger message
// still goes in when the queue is empty.
const (
	maxPubQueue      = 64
	maxPubQueueBytes = 1 << 20
)

func (it *pubItem) size() int {
	n := 64
	for _, m := range it.out {
		n += len(m.Type) + len(m.Data) + len(m.seed) + 64
	}
	return n
}

// queuePublish hands it to the session's publisher, starting its
// goroutine if none runs, and blocks while the queue is full. An answer
// with nothing in flight before it goes out at once. Reader only.
func (s *Session) queuePublish(it pubItem) {
	p := s.pub
	if p == nil && !it.publish {
		s.keepOrder(&it)
		s.answer(&it, nil) // nothing was ever queued
		return
	}
	if p == nil {
		p = &publisher{}
		p.room.L = &p.mu
		s.pub = p
	}
	p.mu.Lock()
	if !it.publish && !p.running {
		p.mu.Unlock()
		s.keepOrder(&it)
		s.answer(&it, nil)
		return
	}
	size := it.size()
	for len(p.queue) >= maxPubQueue || (p.bytes > 0 && p.bytes+size > maxPubQueueBytes) {
		p.room.Wait()
	}
	p.queue = append(p.queue, it)
	p.bytes += size
	if !p.running {
		p.running = true
		p.wg.Add(1)
		go s.publishLoop(p)
	}
	p.mu.Unlock()
}

// publishLoop publishes what is queued, one call per round, until the
// queue is empty.
func (s *Session) publishLoop(p *publisher) {
	defer p.wg.Done()
	var spare []pubItem
	failed := false
	for {
		p.mu.Lock()
		items := p.queue
		if len(items) == 0 {
			p.running = false
			p.mu.Unlock()
			return
		}
		p.queue, p.bytes = spare[:0], 0
		p.room.Signal()
		p.mu.Unlock()
		failed = s.publishItems(p, items, failed)
		clear(items)
		spare = items
	}
}

// errSessionGone refuses what a session still held when it ended after a
// failed publish: its reader waits for the publisher, so it does not wait
// for the backplane to fail once more.
var errSessionGone = errors.New("session ended while the backplane failed; queued messages not published")

// publishItems publishes items in one call and answers each in order. It
// reports whether the backplane failed.
func (s *Session) publishItems(p *publisher, items []pubItem, failedBefore bool) (failed bool) {
	batches := p.batches[:0]
	for i := range items {
		s.keepOrder(&items[i])
		if items[i].publish {
			batches = append(batches, items[i].out)
		}
	}
	results := p.results[:0]
	if len(batches) > 0 {
		results = append(results, make([]BatchResult, len(batches))...)
		s.mu.Lock()
		ended := s.closing
		s.mu.Unlock()
		if failedBefore && ended {
			for i := range results {
				results[i].Err = errSessionGone
			}
		} else {
			s.hub.batch.PublishBatches(context.Background(), batches, results)
		}
	}
	k := 0
	for i := range items {
		var r *BatchResult
		if items[i].publish {
			r = &results[k]
			k++
			failed = failed || r.Err != nil
		}
		s.answer(&items[i], r)
	}
	clear(batches)
	clear(results)
	p.batches, p.results = batches, results
	return failed
}

// answer acks or refuses one client message; r is its publish result, nil
// when it was not published.
func (s *Session) answer(it *pubItem, r *BatchResult) {
	switch {
	case it.refusal != nil:
		s.refuse(it.id, it.refusal, it.route)
	case r == nil:
		if it.id != "" {
			s.ack(it.id, it.seq)
		}
	case r.Err != nil && errors.Is(r.Err, ErrPublishUnconfirmed):
		s.holdFor(it.id, ErrUnconfirmed)
		s.hub.metrics.drops.WithLabelValues(ErrUnconfirmed).Inc()
		s.log().Debug("backplane: publish unconfirmed", "token", s.tokenHash, "env", s.env, "err", r.Err)
		s.refuse(it.id, &ClientError{Code: ErrUnconfirmed, Message: "relay may have accepted the message; resend it with the same id"}, it.route)
	case r.Err != nil:
		s.holdFor(it.id, ErrUnavailable)
		s.hub.metrics.drops.WithLabelValues(ErrUnavailable).Inc()
		s.log().Debug("backplane: publish failed", "token", s.tokenHash, "env", s.env, "err", r.Err)
		message := "relay cannot accept messages right now (not relayed); retry"
		if errors.Is(r.Err, ErrBackplaneFull) {
			message = "relay's backplane is out of memory (not relayed); retry later"
		}
		s.refuse(it.id, &ClientError{Code: ErrUnavailable, Message: message}, it.route)
	default:
		if r.Duplicate {
			s.hub.metrics.drops.WithLabelValues("duplicate").Inc()
		}
		if it.id != "" {
			s.ack(it.id, r.Seq)
		}
	}
}

// A client resends a message refused with a retryable code (rate_limited,
// unavailable, unconfirmed) together with what it sent after it, in order. Those later
// messages were already on their way when the refusal left: accepted, they
// would overtake the resent one. So after such a refusal of a message with
// an id, the session refuses every later message with the same code until
// that id comes again; a client that resends in order (as the SDK does)
// keeps its order. The hold ends with the connection. One goroutine at a
// time uses it: the reader, or the publisher while it runs.

// keepOrder turns it into a refusal while an earlier message is held back,
// ends the hold when it is that message, and starts one when it is itself
// refused with a retryable code.
func (s *Session) keepOrder(it *pubItem) {
	if s.held != "" {
		if it.id != s.held {
			// Held back, it is certainly not relayed: after an unconfirmed
			// message, the later ones are plainly unavailable.
			code := s.heldCode
			if code == ErrUnconfirmed {
				code = ErrUnavailable
			}
			s.hub.metrics.drops.WithLabelValues(code).Inc()
			*it = pubItem{id: it.id, route: it.route, refusal: &ClientError{Code: code,
				Message: "message " + strconv.Quote(s.held) + " was refused before this one: resend it first; later messages are refused until then, to keep their order"}}
			return
		}
		s.held = ""
	}
	if it.refusal != nil && (it.refusal.Code == ErrRateLimited && it.route == "" ||
		it.refusal.Code == ErrUnavailable || it.refusal.Code == ErrUnconfirmed) {
		s.holdFor(it.id, it.refusal.Code)
	}
}

// holdFor holds back the messages after id, refused with code.
func (s *Session) holdFor(id, code string) {
	if id != "" && s.held == "" {
		s.held, s.heldCode = id, code
	}
}
