// Package streamtest is a test client for relay's delivery guarantees: two
// of them exchange numbered messages through one relay or several while a
// test breaks connections, instances or Redis, and check that every message
// reached the other side's application exactly once, in order.
package streamtest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
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
	otherErrors []string
	sessions    []string // instance names connected to, in order
	stopped     bool
}

func NewStreamClient(t testing.TB, urls []string, at int, token, env string, total int) *StreamClient {
	c := &StreamClient{t: t, urls: urls, at: at, token: token, env: env, total: total, Window: 64, Pace: time.Millisecond}
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
				}
				c.lastSeq = h.Seq
			}
			close(hello)
		case "relay.ack":
			var a struct{ ID string }
			_ = json.Unmarshal(f.Data, &a)
			var n int
			fmt.Sscanf(a.ID, c.env+"-%d", &n)
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
			case "unavailable", "rate_limited":
				// Retryable: resend everything unacked, in order. relay
				// refuses what followed the refused message until then.
				if e.Code == "unavailable" {
					c.unavailable++
				} else {
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

// Progress is how many messages this client received.
func (c *StreamClient) Progress() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expect
}

// Exchange runs two clients until both are done (or the deadline), calling
// during(h5, mini) meanwhile, and checks exactly-once in-order delivery.
func Exchange(t testing.TB, h5, mini *StreamClient, total int, deadline time.Duration, during func()) {
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
		t.Logf("%s→%s: sent %d, delivered %d, lost %d, duplicated %d, reordered %d; %s reconnected %d times (sessions %d), wire repeats dropped by seq %d, resyncs %d, unavailable refusals to %s %d",
			s.env, r.env, s.nextN, r.delivered, lost, r.dups, r.reordered, r.env, r.reconnects, len(r.sessions), r.seqRepeats, r.resyncs, s.env, s.unavailable)
		if s.nextN != total || r.delivered != total || lost != 0 || r.dups != 0 || r.reordered != 0 {
			t.Errorf("%s→%s: want %d sent and delivered exactly once, in order", s.env, r.env, total)
		}
		if r.resyncs != 0 {
			t.Errorf("%s: %d reconnects fell outside the history window", r.env, r.resyncs)
		}
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
