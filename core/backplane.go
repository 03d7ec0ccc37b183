package core

import (
	"context"
	"errors"
)

// Backplane carries accepted messages to every relay instance that holds a
// session of the message's token. It owns what must be agreed on across
// instances: per-token ordering (seq), the history clients resume from, and
// which client ids were already accepted.
type Backplane interface {
	// Publish accepts the messages one client message turned into (all of
	// one token, usually one), assigns consecutive seqs, records them in
	// the token's history and hands them to the token's subscribers in seq
	// order. When the batch carries a client id (batch[0].ID) that the same
	// token+env already published within the history window, nothing is
	// published and the result names the original seq as a duplicate.
	Publish(ctx context.Context, batch []*Message) (PublishResult, error)
	// Seen reports the seq a client id was accepted with, if it is still
	// within the window: a cheap check before a repeat runs the pipeline.
	Seen(ctx context.Context, token, from, id string) (seq uint64, ok bool, err error)
	// Subscribe registers d for messages of token published from now on.
	Subscribe(token string, d Deliverer) (unsubscribe func())
	// Join claims token+env for session (newest wins across instances),
	// records it as online and tells every subscriber of the token with an
	// EventJoin. It fails with ErrEnvTaken (req.Reject and the env is held)
	// or ErrTokenFull (req.MaxEnvs other envs are online already).
	Join(ctx context.Context, req JoinRequest) (JoinResult, error)
	// Leave ends session's claim if it still holds it, and then tells the
	// subscribers with an EventLeave; a replaced session leaves silently.
	Leave(ctx context.Context, token, env, session string) error
	// History returns the token's retained messages with seq > since, in
	// order, at most limit of them (0: no limit), with the newest seq
	// assigned and whether nothing after since was lost (evicted, or since
	// is not of this token's seq range). since 0 asks for everything
	// retained. A resume reads it a page at a time.
	History(ctx context.Context, token string, since uint64, limit int) (HistoryResult, error)
	Close() error
}

// BatchPublisher is a Backplane for which one call carrying the messages
// of several client messages costs much less than one call per client
// message (a network round trip, a script run). A session publishes
// through it when its backplane has it: it then keeps several client
// messages in flight and publishes what queued up meanwhile in one call.
// The memory backplane does not have it, since queueing would only add a
// goroutine hand-off to a function call.
type BatchPublisher interface {
	// PublishBatches publishes batches (all of one token) in order, each
	// as Publish would: batches[i] is what client message i turned into,
	// deduplicated by its own client id (batches[i][0].ID), also against
	// an earlier batch of the same call. results[i] receives batches[i]'s
	// result, or its error when it was not accepted; len(results) ==
	// len(batches). An empty batch publishes nothing and gets a zero
	// result.
	PublishBatches(ctx context.Context, batches [][]*Message, results []BatchResult)
}

// BatchResult is one client message's outcome in PublishBatches.
type BatchResult struct {
	PublishResult
	Err error
}

// PublishResult says how a batch was accepted.
type PublishResult struct {
	Seq       uint64 // seq of the batch's last message, or of the original for a duplicate
	Duplicate bool
}

// HistoryResult is a token's history after a given seq.
type HistoryResult struct {
	Messages []*Message
	Last     uint64 // newest seq assigned for the token
	Complete bool   // every message with seq > since is in Messages
}

// JoinRequest is a session asking to become its token+env's connection.
type JoinRequest struct {
	Token, Env, Session string
	Reject              bool // refuse when the env is held, instead of replacing
	MaxEnvs             int  // envs the token may have online at once; 0: no cap
}

// JoinResult tells a joining session who else is there.
type JoinResult struct {
	Peers    []string // the token's other envs online, on any instance
	Replaced string   // the session this one replaced, "" if the env was free
	Epoch    uint64   // the claim's place in the token's order of claims: newest wins
}

// ErrPublishUnconfirmed is wrapped by a Publish or PublishBatches error
// when the backplane cannot tell whether the messages were accepted (a
// request reached it but its answer was lost). Other publish errors mean
// the messages were certainly not accepted and never will be. Either way a
// resend with the same client id is safe: it is deduplicated if the first
// attempt was accepted after all.
var ErrPublishUnconfirmed = errors.New("publish unconfirmed: may have been accepted")

// ErrBackplaneFull is wrapped by a publish error when the backplane
// refused the messages for want of memory (Redis over its maxmemory and
// unable to evict). They were certainly not accepted; the sender gets
// unavailable, and sends work again once memory is freed.
var ErrBackplaneFull = errors.New("backplane out of memory")

// Join refusals.
var (
	ErrEnvTaken  = errors.New("env already connected for this token")
	ErrTokenFull = errors.New("too many envs connected for this token")
)

// EventKind says what changed in a token's presence.
type EventKind uint8

const (
	EventJoin  EventKind = iota + 1 // Session now holds Env (Replaced: it took over from another)
	EventLeave                      // Env went offline
)

// Event is a change in a token's presence, delivered in order with its messages.
type Event struct {
	Kind     EventKind
	Env      string
	Session  string
	Replaced bool
	Epoch    uint64 // EventJoin: the claim's epoch, as JoinResult.Epoch
}

// Deliverer receives a token's messages and presence events from the
// backplane. Neither method may block: they run while the backplane holds
// the token's ordering.
type Deliverer interface {
	Deliver(m *Message)
	Event(e Event)
}

// Addressed reports whether m goes to env: never back to its sender, and
// only to the envs in To when To is set.
func (m *Message) Addressed(env string) bool {
	if env == m.From {
		return false
	}
	if m.To == nil {
		return true
	}
	for _, to := range m.To {
		if to == env {
			return true
		}
	}
	return false
}
