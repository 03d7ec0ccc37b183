package redisbp

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pairrelay/relay/core"
)

// One pub/sub connection per backplane carries every token this instance
// holds. Subscribe and unsubscribe only queue a command; a command
// goroutine sends them in order (so a fast unsubscribe+subscribe of one
// channel cannot be reordered), and the reader goroutine receives
// confirmations, messages and events and dispatches them in the order
// Redis published them.

func (b *Backplane) pubsub() *redis.PubSub {
	b.psMu.RLock()
	defer b.psMu.RUnlock()
	return b.ps
}

func (b *Backplane) Subscribe(token string, d core.Deliverer) func() {
	k := b.keys(token)
	b.mu.Lock()
	sub := b.subs[k.channel]
	if sub == nil {
		sub = &subscription{token: token, keys: k, ready: make(chan struct{})}
		b.subs[k.channel] = sub
		b.enqueue(psCommand{subscribe: true, channel: k.channel, sub: sub})
	}
	sub.mu.Lock()
	sub.deliverers = append(slices.Clip(sub.deliverers), d)
	sub.mu.Unlock()
	b.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { b.unsubscribe(sub, d) }) }
}

func (b *Backplane) unsubscribe(sub *subscription, d core.Deliverer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sub.mu.Lock()
	if i := slices.Index(sub.deliverers, d); i >= 0 {
		sub.deliverers = slices.Delete(slices.Clone(sub.deliverers), i, i+1)
	}
	empty := len(sub.deliverers) == 0
	sub.mu.Unlock()
	if empty && b.subs[sub.keys.channel] == sub {
		delete(b.subs, sub.keys.channel)
		b.enqueue(psCommand{channel: sub.keys.channel})
	}
}

// enqueue queues a pub/sub command; b.mu is held, so commands are queued
// in the order the subscriptions changed.
func (b *Backplane) enqueue(c psCommand) {
	b.cmdMu.Lock()
	b.cmds = append(b.cmds, c)
	b.cmdMu.Unlock()
	select {
	case b.cmdWake <- struct{}{}:
	default:
	}
}

// awaitSubscribed waits (boundedly) until this instance's subscription to
// channel, if it has one, is live in Redis, so that what this instance
// publishes or reads next is not older than the subscription.
func (b *Backplane) awaitSubscribed(ctx context.Context, channel string) {
	b.mu.RLock()
	sub := b.subs[channel]
	b.mu.RUnlock()
	if sub == nil || isClosed(sub.ready) || !b.pubsubOK.Load() {
		return
	}
	t := time.NewTimer(b.opts.OpTimeout)
	defer t.Stop()
	select {
	case <-sub.ready:
	case <-t.C:
	case <-ctx.Done():
	case <-b.ctx.Done():
	}
}

// commandLoop sends queued SUBSCRIBE and UNSUBSCRIBE commands in order,
// consecutive ones of a kind together.
func (b *Backplane) commandLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.cmdWake:
		}
		// Commands wait while Redis is unreachable: sending them would only
		// dial in vain (see reachable). They go out, in order, once it is
		// back; the reader's reconnect subscribes the channels subscribed
		// before.
		if !b.waitReachable() {
			return
		}
		b.cmdMu.Lock()
		cmds := lastPerChannel(b.cmds)
		b.cmds = nil
		b.cmdMu.Unlock()
		for len(cmds) > 0 {
			n := 1
			for n < len(cmds) && cmds[n].subscribe == cmds[0].subscribe {
				n++
			}
			channels := make([]string, n)
			for i, c := range cmds[:n] {
				channels[i] = c.channel
			}
			ps := b.pubsub()
			var err error
			if cmds[0].subscribe {
				b.mu.Lock()
				for _, c := range cmds[:n] {
					b.waiting[c.channel] = append(b.waiting[c.channel], c.sub)
				}
				b.mu.Unlock()
				// go-redis remembers the channels even when the write fails
				// and subscribes them again when it reconnects.
				err = ps.Subscribe(b.ctx, channels...)
				if err != nil {
					// This command never reached Redis (the connection could
					// not be made or broke during the write, and go-redis
					// closed it), so no confirmation will answer it. Left
					// waiting, each entry would take the confirmation of a
					// later SUBSCRIBE of its channel for its own: one stale
					// entry per failed command, and every later subscription
					// of the channel stays unconfirmed and deaf. The
					// resubscription after the reconnect confirms the
					// channel's current subscription instead.
					b.mu.Lock()
					for _, c := range cmds[:n] {
						b.unwait(c.channel, c.sub)
					}
					b.mu.Unlock()
				}
			} else {
				err = ps.Unsubscribe(b.ctx, channels...)
			}
			if err != nil && b.ctx.Err() == nil {
				b.log.Debug("redis backplane: pub/sub command failed; it is repeated on reconnect", "err", err)
			}
			cmds = cmds[n:]
		}
	}
}

// lastPerChannel keeps the last of the queued commands of each channel, in
// order: only the channel's final state matters to Redis, and a
// subscription whose subscribe is followed by another command was dropped
// meanwhile. Sessions that come and go while Redis is unreachable (each
// refused) queue a subscribe and an unsubscribe each, thousands in a long
// outage, which would otherwise all go out once Redis is back and delay
// the confirmation of the subscription that counts.
func lastPerChannel(cmds []psCommand) []psCommand {
	if len(cmds) < 2 {
		return cmds
	}
	last := make(map[string]int, len(cmds))
	for i, c := range cmds {
		last[c.channel] = i
	}
	if len(last) == len(cmds) {
		return cmds
	}
	out := make([]psCommand, 0, len(last))
	for i, c := range cmds {
		if last[c.channel] == i {
			out = append(out, c)
		}
	}
	return out
}

// unwait removes sub's newest entry from the channel's waiting queue; b.mu
// is held.
func (b *Backplane) unwait(channel string, sub *subscription) {
	q := b.waiting[channel]
	for i := len(q) - 1; i >= 0; i-- {
		if q[i] == sub {
			q = slices.Delete(q, i, i+1)
			break
		}
	}
	if len(q) == 0 {
		delete(b.waiting, channel)
	} else {
		b.waiting[channel] = q
	}
}

// readLoop receives from the pub/sub connection until Close. go-redis
// reconnects a broken connection on the next receive and subscribes it to
// every channel again; the confirmations make each subscription catch up
// on what it missed meanwhile from the history.
func (b *Backplane) readLoop() {
	defer b.wg.Done()
	lastHeard, pinged := time.Now(), time.Time{}
	backoff := 10 * time.Millisecond
	for b.ctx.Err() == nil {
		ps := b.pubsub()
		timeout := b.opts.HealthInterval
		if len(b.behind) > 0 {
			timeout = min(timeout, catchUpRetry)
		}
		msg, err := ps.ReceiveTimeout(b.ctx, timeout)
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			var netErr net.Error
			if errors.As(err, &netErr) && netErr.Timeout() {
				b.retryCatchUps()
				// Silence: ask the server for a sign of life, and replace a
				// connection that stays silent (a peer gone without a reset).
				silent := time.Since(lastHeard)
				if silent >= 3*b.opts.HealthInterval {
					b.replacePubSub(ps, errors.New("no answer to pings"))
					lastHeard = time.Now()
					continue
				}
				if silent >= b.opts.HealthInterval && time.Since(pinged) >= b.opts.HealthInterval {
					_ = ps.Ping(b.ctx, "hc")
					pinged = time.Now()
				}
				continue
			}
			b.lostPubSub(b.noted(err))
			// Retry soon: while this connection is down, the subscribers
			// miss what other instances publish and must catch up on it
			// from the history. While Redis is unreachable, wait for the
			// health check to find it back instead of dialing (see
			// reachable): it wakes the reader at once.
			select {
			case <-b.ctx.Done():
				return
			case <-time.After(backoff):
			}
			if !b.waitReachable() {
				return
			}
			backoff = min(backoff*2, 200*time.Millisecond)
			continue
		}
		lastHeard = time.Now()
		backoff = 10 * time.Millisecond
		if !b.pubsubOK.Swap(true) {
			b.log.Info("redis backplane: pub/sub connection restored")
		}
		switch m := msg.(type) {
		case *redis.Message:
			b.dispatch(m.Channel, m.Payload)
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				b.confirmed(m.Channel)
			}
		case *redis.Pong:
			if strings.HasPrefix(m.Payload, "b") {
				b.pingMu.Lock()
				if ch := b.pings[m.Payload]; ch != nil {
					close(ch)
					delete(b.pings, m.Payload)
				}
				b.pingMu.Unlock()
			}
		}
		if len(b.behind) > 0 {
			b.retryCatchUps()
		}
	}
}

// lostPubSub notes that the pub/sub connection broke: confirmations of
// commands sent on it will never come.
func (b *Backplane) lostPubSub(err error) {
	if b.pubsubOK.Swap(false) {
		b.reconnects.Add(1)
		b.log.Warn("redis backplane: pub/sub connection lost; reconnecting", "err", err)
	}
	b.mu.Lock()
	clear(b.waiting)
	b.mu.Unlock()
}

// replacePubSub swaps a silent pub/sub connection for a new one subscribed
// to every channel.
func (b *Backplane) replacePubSub(old *redis.PubSub, reason error) {
	b.lostPubSub(reason)
	b.psMu.Lock()
	if b.ps != old || b.ctx.Err() != nil {
		b.psMu.Unlock()
		return
	}
	_ = old.Close()
	ps := b.rdb.Subscribe(b.ctx)
	b.ps = ps
	b.mu.RLock()
	channels := make([]string, 0, len(b.subs))
	for ch := range b.subs {
		channels = append(channels, ch)
	}
	b.mu.RUnlock()
	// Still holding psMu: the command goroutine's next (un)subscribe goes
	// to the new connection after this.
	if len(channels) > 0 {
		_ = ps.Subscribe(b.ctx, channels...)
	}
	b.psMu.Unlock()
}

// confirmed handles Redis confirming a SUBSCRIBE of channel: a new
// subscription goes live, a live one was subscribed again after a
// reconnect and catches up on what it missed.
func (b *Backplane) confirmed(channel string) {
	b.mu.Lock()
	var sub *subscription
	if q := b.waiting[channel]; len(q) > 0 {
		sub = q[0]
		if len(q) == 1 {
			delete(b.waiting, channel)
		} else {
			b.waiting[channel] = q[1:]
		}
		if b.subs[channel] != sub {
			sub = nil // confirms a subscription dropped since
		}
	} else {
		sub = b.subs[channel]
	}
	b.mu.Unlock()
	if sub == nil {
		return
	}
	if !sub.confirmed {
		sub.confirmed = true
		close(sub.ready)
		return
	}
	b.catchUp(sub)
}

// dispatch hands a published payload to the channel's subscribers.
func (b *Backplane) dispatch(channel, payload string) {
	b.mu.RLock()
	sub := b.subs[channel]
	b.mu.RUnlock()
	// Before its confirmation a subscription hears only what was published
	// before it began (to an earlier subscription of the channel).
	if sub == nil || !sub.confirmed || len(payload) == 0 {
		return
	}
	switch payload[0] {
	case 'm':
		i := strings.IndexByte(payload, ':')
		if i < 2 {
			b.log.Error("redis backplane: malformed message on the channel", "token", shortHash(sub.token))
			return
		}
		seq, err := strconv.ParseUint(payload[1:i], 10, 64)
		if err != nil {
			b.log.Error("redis backplane: malformed message seq", "token", shortHash(sub.token))
			return
		}
		if sub.behind && !b.catchUp(sub) {
			// What came before it is still to be read from the history,
			// and this message will be read with it.
			return
		}
		if seq <= sub.lastSeq {
			return // delivered already by a catch-up
		}
		if last := max(sub.lastSeq, sub.floor.Load()); last != 0 && seq > last+1 {
			// Seqs are consecutive: a gap is a message this connection
			// did not see (a reconnect, or a token whose state was lost).
			// The catch-up reads this message too, or it fails, and then
			// this message waits in the history with those before it.
			if !b.catchUp(sub) || seq <= sub.lastSeq {
				return
			}
		}
		m, err := decodeMessage([]byte(payload[i+1:]))
		if err != nil {
			b.log.Error("redis backplane: undecodable message", "token", shortHash(sub.token), "seq", seq, "err", err)
			return
		}
		m.Token, m.Seq = sub.token, seq
		b.deliver(sub, m)
	case 'd':
		// A server API disconnect (see Disconnect): "d<env>\0<code>".
		env, codeText, ok := strings.Cut(payload[1:], "\x00")
		code, err := strconv.Atoi(codeText)
		if !ok || err != nil {
			b.log.Error("redis backplane: malformed disconnect event", "token", shortHash(sub.token))
			return
		}
		e := core.Event{Kind: core.EventDisconnect, Env: env, Code: code}
		sub.mu.Lock()
		for _, d := range sub.deliverers {
			d.Event(e)
		}
		sub.mu.Unlock()
	case 'j', 'l':
		f := strings.Split(payload[1:], "\x00")
		var e core.Event
		switch {
		case payload[0] == 'l' && len(f) == 2:
			e = core.Event{Kind: core.EventLeave, Env: f[0], Session: f[1]}
		case payload[0] == 'j' && len(f) == 5:
			epoch, _ := strconv.ParseUint(f[2], 10, 64)
			e = core.Event{Kind: core.EventJoin, Env: f[0], Session: f[1], Epoch: epoch, Replaced: f[3] == "1"}
		default:
			b.log.Error("redis backplane: malformed presence event", "token", shortHash(sub.token))
			return
		}
		sub.mu.Lock()
		for _, d := range sub.deliverers {
			d.Event(e)
		}
		sub.mu.Unlock()
	}
}

func (b *Backplane) deliver(sub *subscription, m *core.Message) {
	sub.lastSeq = m.Seq
	sub.mu.Lock()
	for _, d := range sub.deliverers {
		d.Deliver(m)
	}
	sub.mu.Unlock()
}

// catchUpRetry is how soon a catch-up that failed is tried again.
const catchUpRetry = 100 * time.Millisecond

// catchUp delivers from the history what sub missed: everything retained
// after the newest message it delivered (before its first, after the
// newest a History call returned). It reports whether it could read the
// history; if not, sub is behind: its live messages are held back (they
// are in the history too) and the catch-up is retried every catchUpRetry
// until it succeeds, so that a history read failing once (Redis still
// loading its dataset after a restart, a timeout) loses nothing and
// reorders nothing. Reader only.
//
// It starts after lastSeq even when a History call has raised floor above
// it meanwhile (held-back messages were dispatched but not delivered): the
// sessions that were there need them, and a session that joined and got
// them in its replay has them again, which v1 clients drop by seq.
func (b *Backplane) catchUp(sub *subscription) bool {
	from := sub.lastSeq
	if from == 0 {
		from = sub.floor.Load()
	}
	if from == 0 {
		b.caughtUp(sub)
		return true
	}
	res, st, err := b.history(b.ctx, sub.token, sub.keys, from, 0)
	if err != nil {
		if !sub.behind {
			b.log.Warn("redis backplane: cannot catch up after a gap yet; live messages of the token wait until the history can be read",
				"token", shortHash(sub.token), "err", err)
			sub.behind = true
			if b.behind == nil {
				b.behind = make(map[*subscription]struct{})
			}
			b.behind[sub] = struct{}{}
		}
		sub.retryAt = time.Now().Add(catchUpRetry)
		return false
	}
	if sub.behind {
		b.log.Info("redis backplane: caught up after a gap", "token", shortHash(sub.token))
	}
	b.caughtUp(sub)
	// Lost is what left the history after from; when Redis lost the token's
	// state, its new life starts at base and only later losses count.
	if st.evicted > max(from, st.base) {
		b.gaps.Add(1)
		b.log.Warn("redis backplane: messages missed while disconnected are no longer in the history",
			"token", shortHash(sub.token), "after", from)
	}
	for _, m := range res.Messages {
		if m.Seq > sub.lastSeq {
			b.catchUps.Add(1)
			b.deliver(sub, m)
		}
	}
	return true
}

func (b *Backplane) caughtUp(sub *subscription) {
	if sub.behind {
		sub.behind = false
		delete(b.behind, sub)
	}
}

// retryCatchUps retries the catch-ups that failed and are due. Reader only.
func (b *Backplane) retryCatchUps() {
	now := time.Now()
	for sub := range b.behind {
		b.mu.RLock()
		current := b.subs[sub.keys.channel] == sub
		b.mu.RUnlock()
		switch {
		case !current:
			b.caughtUp(sub) // unsubscribed meanwhile
		case !now.Before(sub.retryAt):
			b.catchUp(sub)
		}
	}
}

// barrier returns once the reader has dispatched everything Redis had
// published before the call.
func (b *Backplane) barrier(ctx context.Context) error {
	id := "b" + strconv.FormatUint(b.pingN.Add(1), 36)
	ch := make(chan struct{})
	b.pingMu.Lock()
	b.pings[id] = ch
	b.pingMu.Unlock()
	defer func() {
		b.pingMu.Lock()
		delete(b.pings, id)
		b.pingMu.Unlock()
	}()
	if err := b.reachable(); err != nil {
		return err
	}
	if err := b.pubsub().Ping(ctx, id); err != nil {
		return err
	}
	t := time.NewTimer(b.opts.OpTimeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return errors.New("redis backplane: pub/sub barrier timed out")
	case <-ctx.Done():
		return ctx.Err()
	case <-b.ctx.Done():
		return errClosed
	}
}

// healthLoop checks the command connections every HealthInterval, and
// every 100 ms while Redis is unreachable (operations fail at once
// meanwhile, so the check decides how soon they work again). While Redis
// is unreachable it checks with a throwaway client of its own rather than
// the shared pool, whose dial errors would trip go-redis's dial breaker
// (see reachable). It also keeps the estimate of Redis's clock that
// publish deadlines are set in.
func (b *Backplane) healthLoop() {
	defer b.wg.Done()
	poll := min(b.opts.HealthInterval, 100*time.Millisecond)
	t := time.NewTicker(poll)
	defer t.Stop()
	last := time.Now()
	fails := 0 // consecutive failed checks
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		up := b.redisOK.Load()
		if up && fails == 0 && time.Since(last) < b.opts.HealthInterval {
			continue
		}
		last = time.Now()
		rdb := b.rdb
		if !up {
			probe := *b.ropts
			probe.PoolSize, probe.MinIdleConns, probe.MaxIdleConns = 1, 0, 0
			rdb = redis.NewClient(&probe)
		}
		offset, rtt, err := b.check(rdb)
		if !up {
			_ = rdb.Close()
		}
		if b.ctx.Err() != nil {
			return
		}
		if err == nil && rtt < b.opts.OpTimeout/4 {
			b.clockOffset.Store(int64(offset))
		}
		switch {
		case err != nil:
			// A refused connection is certain; a slow answer may be a
			// moment's load (a busy host, a fork), so it takes two in a
			// row, 100 ms apart, to refuse every call.
			if fails++; fails >= 2 || isDialError(err) {
				b.markDown(err)
			}
		case !b.redisOK.Swap(true):
			fails = 0
			b.upMu.Lock()
			close(b.up)
			b.up = make(chan struct{})
			b.upMu.Unlock()
			b.log.Info("redis backplane: redis reachable again")
		default:
			fails = 0
		}
	}
}

// check asks rdb for PING and TIME in one round trip: PING answers LOADING
// while Redis loads its dataset (TIME does not), so Redis is usable when
// both answer. It returns Redis's clock minus this host's and the round
// trip.
func (b *Backplane) check(rdb *redis.Client) (time.Duration, time.Duration, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.HealthInterval)
	defer cancel()
	pipe := rdb.Pipeline()
	ping := pipe.Ping(ctx)
	now := pipe.Time(ctx)
	sent := time.Now()
	_, _ = pipe.Exec(ctx)
	rtt := time.Since(sent)
	if err := ping.Err(); err != nil {
		return 0, rtt, err
	}
	if err := now.Err(); err != nil {
		return 0, rtt, err
	}
	return now.Val().Sub(sent.Add(rtt / 2)), rtt, nil
}

// measureClock returns Redis's clock minus this host's.
func measureClock(ctx context.Context, rdb *redis.Client) (time.Duration, error) {
	sent := time.Now()
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		return 0, err
	}
	return now.Sub(sent.Add(time.Since(sent) / 2)), nil
}
