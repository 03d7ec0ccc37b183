// Package streamtest is a test client for relay's delivery guarantees: two
// of them exchange numbered messages through one relay or several while a
// test breaks connections, instances or Redis, and check that every message
// reached the other side's application exactly once, in order.
package streamtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

// StreamClient is an application using relay's delivery guarantees the
// way the SDK does: it remembers the last seq it processed and reconnects
// with since, resends what was not acked (same ids, in order), drops seqs
// it has seen, and resends what the relay refused as unavailable. When its
// connection breaks it moves on to the next instance in its list. It counts
// what reaches its application layer.
type StreamClient struct {
	t          testing.TB
	urls       []string // instances, tried in turn starting after the current one
	token, env string
	total      int           // messages to send
	Window     int           // unacked messages in flight (default 64)
	Pace       time.Duration // pause after every 5 messages (default 1ms: about 5,000 messages/s)

	mu          sync.Mutex
	cond        *sync.Cond
	at          int // index in urls of the current or last instance
	conn        *fws.Conn
	lastSeq     uint64
	nextN       int
	unacked     []int // sent, not yet acked, in order
	resend      bool  // resend unacked before anything new
	refused     bool  // resend because of an unavailable refusal
	expect      int   // next number expected from the peer
	delivered   int
	dups        int
	reordered   int
	seqRepeats  int // frames dropped by seq (repeats on the wire)
	resyncs     int // hello with resumed:false
	reconnects  int
	unavailable int // relay.error unavailable
	rateLimited int // relay.error rate_limited
	unconfirmed int // relay.error unconfirmed
	otherErrors []string
	closes      map[int]int // close code → how many connections the relay closed with it
	// What a test may analyse after the run (see CheckAfter).
	firstSent map[int]time.Time // number → when it was first written
	ackSeq    map[int]uint64    // number → the seq its ack carried
	log       []Delivery        // every peer message handed to the application, in order
	resyncLog []Resync
	sessions  []string // instance names connected to, in order
	stopped   bool
}

func NewStreamClient(t testing.TB, urls []string, at int, token, env string, total int) *StreamClient {
	c := &StreamClient{t: t, urls: urls, at: at, token: token, env: env, total: total, Window: 64, Pace: time.Millisecond,
		firstSent: make(map[int]time.Time, total), ackSeq: make(map[int]uint64, total)}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *StreamClient) finished(peerTotal int) bool {
	return c.nextN == c.total && len(c.unacked) == 0 && c.expect == peerTotal
}

// run connects (since=0 at first: what the peer sent earlier waits in the
// history) until everything was sent, acked and received, or stop.
func (c *StreamClient) run(peerTotal int) {
	first := true
	for attempt := 0; attempt < 100000; attempt++ {
		c.mu.Lock()
		if c.stopped || c.finished(peerTotal) {
			c.mu.Unlock()
			return
		}
		if !first {
			c.at = (c.at + 1) % len(c.urls)
		}
		first = false
		u := c.urls[c.at]
		query := fmt.Sprintf("v=1&token=%s&env=%s&since=%d", url.QueryEscape(c.token), c.env, c.lastSeq)
		c.mu.Unlock()
		d := fws.Dialer{HandshakeTimeout: 2 * time.Second}
		conn, _, err := d.Dial(u+"?"+query, nil)
		if err != nil {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		c.session(conn, u, peerTotal)
	}
}

func (c *StreamClient) session(conn *fws.Conn, u string, peerTotal int) {
	c.mu.Lock()
	c.conn = conn
	c.sessions = append(c.sessions, u)
	c.mu.Unlock()
	readerDone := make(chan struct{})
	hello := make(chan struct{})
	go func() {
		defer close(readerDone)
		c.read(conn, hello)
	}()
	select {
	case <-hello:
	case <-readerDone:
		conn.Close()
		return
	}
	c.mu.Lock()
	c.resend = len(c.unacked) > 0
	c.mu.Unlock()
	ok := true
	for ok {
		c.mu.Lock()
		for !c.stopped && c.conn == conn && !c.resend && (c.nextN == c.total || len(c.unacked) >= c.Window) && !c.finished(peerTotal) {
			c.cond.Wait()
		}
		if c.stopped || c.conn != conn || c.finished(peerTotal) {
			c.mu.Unlock()
			break
		}
		var batch []int
		if c.resend && c.refused {
			// Refused as unavailable: give the relay a moment.
			c.refused = false
			c.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
			c.mu.Lock()
		}
		if c.resend {
			// Everything unacked again, in order, with the same ids: the
			// relay deduplicates what it had accepted.
			c.resend = false
			batch = append(batch, c.unacked...)
		} else {
			batch = []int{c.nextN}
			c.unacked = append(c.unacked, c.nextN)
			c.nextN++
		}
		c.mu.Unlock()
		for _, n := range batch {
			c.mu.Lock()
			if _, ok := c.firstSent[n]; !ok {
				c.firstSent[n] = time.Now()
			}
			c.mu.Unlock()
			frame := fmt.Sprintf(`{"type":"stream","data":{"n":%d,"at":%d},"id":"%s-%d"}`, n, time.Now().UnixNano(), c.env, n)
			if ok = conn.WriteMessage(fws.TextMessage, []byte(frame)) == nil; !ok {
				break
			}
			if n%5 == 4 && c.Pace > 0 {
				time.Sleep(c.Pace)
			}
		}
		if len(batch) > 1 {
			// Let the answers to the resent batch arrive before sending on.
			time.Sleep(5 * time.Millisecond)
		}
	}
	conn.Close()
	<-readerDone
}

func (c *StreamClient) read(conn *fws.Conn, hello chan struct{}) {
	defer func() {
		c.mu.Lock()
		if c.conn == conn {
			c.conn = nil
			c.reconnects++
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	for {
		_, text, err := conn.ReadMessage()
		if err != nil {
			var ce *fws.CloseError
			if errors.As(err, &ce) {
				c.mu.Lock()
				if c.closes == nil {
					c.closes = map[int]int{}
				}
				c.closes[ce.Code]++
				c.mu.Unlock()
			}
			return
		}
		var f struct {
			Type string
			Seq  uint64
			Data json.RawMessage
		}
		if err := json.Unmarshal(text, &f); err != nil {
			c.t.Errorf("%s: bad frame %s", c.env, text)
			return
		}
		c.mu.Lock()
		switch f.Type {
		case "relay.hello":
			var h struct {
				Seq     uint64
				Resumed bool
			}
			_ = json.Unmarshal(f.Data, &h)
			if !h.Resumed {
				if c.lastSeq != 0 || c.expect != 0 {
					c.resyncs++
					c.resyncLog = append(c.resyncLog, Resync{At: time.Now(), Since: c.lastSeq, Seq: h.Seq})
				}
				c.lastSeq = h.Seq
			}
			close(hello)
		case "relay.ack":
			var a struct {
				ID  string
				Seq uint64
			}
			_ = json.Unmarshal(f.Data, &a)
			var n int
			fmt.Sscanf(a.ID, c.env+"-%d", &n)
			c.ackSeq[n] = a.Seq
			for i, u := range c.unacked {
				if u == n {
					c.unacked = append(c.unacked[:i], c.unacked[i+1:]...)
					break
				}
			}
		case "relay.error":
			var e struct{ ID, Code string }
			_ = json.Unmarshal(f.Data, &e)
			switch e.Code {
			case "unavailable", "unconfirmed", "rate_limited":
				// Retryable: resend everything unacked, in order, with the
				// same ids. relay refuses what followed the refused message
				// until then; an unconfirmed one that was accepted after all
				// is deduplicated.
				switch e.Code {
				case "unavailable":
					c.unavailable++
				case "unconfirmed":
					c.unconfirmed++
				default:
					c.rateLimited++
				}
				c.resend, c.refused = true, true
			default:
				c.otherErrors = append(c.otherErrors, string(f.Data))
			}
		case "stream":
			if f.Seq <= c.lastSeq {
				c.seqRepeats++
				break
			}
			c.lastSeq = f.Seq
			var d struct{ N int }
			_ = json.Unmarshal(f.Data, &d)
			c.log = append(c.log, Delivery{N: d.N, Seq: f.Seq, At: time.Now()})
			switch {
			case d.N == c.expect:
				c.expect++
				c.delivered++
			case d.N < c.expect:
				c.dups++
			default:
				c.reordered++
				c.expect = d.N + 1
			}
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// Stop ends the client's work and its connection.
func (c *StreamClient) Stop() {
	c.mu.Lock()
	c.stopped = true
	conn := c.conn
	c.cond.Broadcast()
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// Cut drops the current connection as a network failure would: no close
// handshake, the socket reset. It reports whether there was one to cut.
func (c *StreamClient) Cut() bool {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return false
	}
	if tcp, ok := conn.UnderlyingConn().(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.UnderlyingConn().Close()
	return true
}

// Reconnects is how many times the client's connection broke.
func (c *StreamClient) Reconnects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconnects
}

// Closes is how many of the client's connections the relay closed with code.
func (c *StreamClient) Closes(code int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closes[code]
}

// Progress is how many messages this client received.
func (c *StreamClient) Progress() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expect
}

// Exchange runs two clients until both are done (or the deadline), calling
// during(h5, mini) meanwhile, and checks exactly-once in-order delivery.
func Exchange(t testing.TB, h5, mini *StreamClient, total int, deadline time.Duration, during func()) {
	Run(t, h5, mini, total, deadline, during)
	for _, pair := range [][2]*StreamClient{{h5, mini}, {mini, h5}} {
		s, r := pair[0], pair[1]
		if s.nextN != total || r.delivered != total || s.nextN-r.delivered != 0 || r.dups != 0 || r.reordered != 0 {
			t.Errorf("%s→%s: want %d sent and delivered exactly once, in order", s.env, r.env, total)
		}
		if r.resyncs != 0 {
			t.Errorf("%s: %d reconnects fell outside the history window", r.env, r.resyncs)
		}
	}
}

// Run runs two clients until both are done (or the deadline), calling
// during meanwhile, and logs what each received. It checks only that they
// finished and met no unexpected refusal; Exchange and CheckAfter check
// delivery.
func Run(t testing.TB, h5, mini *StreamClient, total int, deadline time.Duration, during func()) {
	var wg sync.WaitGroup
	for _, c := range []*StreamClient{h5, mini} {
		wg.Add(1)
		go func(c *StreamClient) { defer wg.Done(); c.run(total) }(c)
	}
	duringDone := make(chan struct{})
	go func() { defer close(duringDone); during() }()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(deadline):
		h5.Stop()
		mini.Stop()
		<-finished
		t.Errorf("the exchange did not finish within %v", deadline)
	}
	<-duringDone
	for _, pair := range [][2]*StreamClient{{h5, mini}, {mini, h5}} {
		s, r := pair[0], pair[1]
		lost := s.nextN - r.delivered
		t.Logf("%s→%s: sent %d, delivered %d, lost %d, duplicated %d, reordered %d; %s reconnected %d times (sessions %d), wire repeats dropped by seq %d, resyncs %d, unavailable/unconfirmed refusals to %s %d/%d",
			s.env, r.env, s.nextN, r.delivered, lost, r.dups, r.reordered, r.env, r.reconnects, len(r.sessions), r.seqRepeats, r.resyncs, s.env, s.unavailable, s.unconfirmed)
		if len(s.otherErrors) > 0 {
			t.Errorf("%s: relay errors %v", s.env, s.otherErrors)
		}
	}
}

// Env is the client's env.
func (c *StreamClient) Env() string { return c.env }

// RateLimited is how many sends the relay refused with relay.error rate_limited.
func (c *StreamClient) RateLimited() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rateLimited
}

// Unavailable is how many sends the relay refused with relay.error unavailable.
func (c *StreamClient) Unavailable() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unavailable
}

// Sessions is how many connections the client opened.
func (c *StreamClient) Sessions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

// Delivery is a peer message the client handed to its application.
type Delivery struct {
	N   int
	Seq uint64
	At  time.Time
}

// Resync is a relay.hello with resumed:false after the client had
// received something: what it missed since Since is lost to it, and it
// goes on from Seq.
type Resync struct {
	At         time.Time
	Since, Seq uint64
}

// Resyncs returns the client's resyncs.
func (c *StreamClient) Resyncs() []Resync {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.resyncLog)
}

// Unconfirmed is how many sends the relay answered with relay.error
// unconfirmed.
func (c *StreamClient) Unconfirmed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unconfirmed
}

// CheckAfter checks what r received of s's messages around an outage that
// ended at from: within resume of from, r receives a message s first sent
// after from; and every message s first sent after from is delivered to
// r exactly once and in order, except those a resync of r after from
// skipped on purpose (their seq not above the resync's hello seq: the
// protocol's resumed:false).
func CheckAfter(t testing.TB, s, r *StreamClient, from time.Time, resume time.Duration) {
	t.Helper()
	s.mu.Lock()
	firstSent := maps.Clone(s.firstSent)
	ackSeq := maps.Clone(s.ackSeq)
	s.mu.Unlock()
	r.mu.Lock()
	log := slices.Clone(r.log)
	resyncs := slices.Clone(r.resyncLog)
	r.mu.Unlock()
	var skippedTo uint64 // messages up to this seq were skipped by a resync after from
	for _, rs := range resyncs {
		if rs.At.After(from) {
			skippedTo = max(skippedTo, rs.Seq)
		}
	}
	after := func(n int) bool {
		at, ok := firstSent[n]
		return ok && at.After(from)
	}
	var first time.Time
	count := map[int]int{}
	last := -1
	for _, d := range log {
		if !after(d.N) {
			continue
		}
		if first.IsZero() {
			first = d.At
		}
		count[d.N]++
		if d.N <= last {
			t.Errorf("%s→%s: message %d (sent after the outage) delivered after %d", s.env, r.env, d.N, last)
		}
		last = max(last, d.N)
	}
	switch {
	case first.IsZero():
		t.Errorf("%s→%s: nothing sent after the outage was delivered", s.env, r.env)
	case first.Sub(from) > resume:
		t.Errorf("%s→%s: the first message sent after the outage was delivered %v after it, want within %v",
			s.env, r.env, first.Sub(from).Round(time.Millisecond), resume)
	default:
		t.Logf("%s→%s: traffic resumed %v after the outage", s.env, r.env, first.Sub(from).Round(time.Millisecond))
	}
	sent, missing, skipped := 0, 0, 0
	for n := range firstSent {
		if !after(n) {
			continue
		}
		sent++
		switch c := count[n]; {
		case c == 1:
		case c > 1:
			t.Errorf("%s→%s: message %d (sent after the outage) delivered %d times", s.env, r.env, n, c)
		case ackSeq[n] != 0 && ackSeq[n] <= skippedTo:
			skipped++
		default:
			missing++
			if missing <= 5 {
				t.Errorf("%s→%s: message %d (sent after the outage, acked with seq %d) never delivered", s.env, r.env, n, ackSeq[n])
			}
		}
	}
	if missing > 5 {
		t.Errorf("%s→%s: %d messages sent after the outage never delivered", s.env, r.env, missing)
	}
	t.Logf("%s→%s: %d messages first sent after the outage; %d skipped by %s's resync after it", s.env, r.env, sent, skipped, r.env)
}

// CutAtRandom cuts each client's connection (Cut) after a random pause of
// least..most, again and again, until stop is called; stop returns once
// the cutting has ended.
func CutAtRandom(clients []*StreamClient, least, most time.Duration) (stop func()) {
	done := make(chan struct{})
	var cutters sync.WaitGroup
	for _, c := range clients {
		cutters.Add(1)
		go func() {
			defer cutters.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(least + rand.N(most-least+1)):
					c.Cut()
				}
			}
		}()
	}
	return func() {
		close(done)
		cutters.Wait()
	}
}
