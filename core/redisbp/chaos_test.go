package redisbp_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

// streamClient is an application using relay's delivery guarantees the
// way the SDK does: it remembers the last seq it processed and reconnects
// with since, resends what was not acked (same ids, in order), drops seqs
// it has seen, and resends what the relay refused as unavailable. When its
// connection breaks it moves on to the next instance in its list. It counts
// what reaches its application layer.
type streamClient struct {
	t          testing.TB
	urls       []string // instances, tried in turn starting after the current one
	token, env string
	total      int           // messages to send
	window     int           // unacked messages in flight
	pace       time.Duration // pause after every 5 messages

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
	otherErrors []string
	sessions    []string // instance names connected to, in order
	stopped     bool
}

func newStreamClient(t testing.TB, urls []string, at int, token, env string, total int) *streamClient {
	c := &streamClient{t: t, urls: urls, at: at, token: token, env: env, total: total, window: 64, pace: time.Millisecond}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *streamClient) finished(peerTotal int) bool {
	return c.nextN == c.total && len(c.unacked) == 0 && c.expect == peerTotal
}

// run connects (since=0 at first: what the peer sent earlier waits in the
// history) until everything was sent, acked and received, or stop.
func (c *streamClient) run(peerTotal int) {
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

func (c *streamClient) session(conn *fws.Conn, u string, peerTotal int) {
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
		for !c.stopped && c.conn == conn && !c.resend && (c.nextN == c.total || len(c.unacked) >= c.window) && !c.finished(peerTotal) {
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
			if n%5 == 4 && c.pace > 0 {
				time.Sleep(c.pace)
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

func (c *streamClient) read(conn *fws.Conn, hello chan struct{}) {
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
			if e.Code == "unavailable" {
				c.unavailable++
				c.resend, c.refused = true, true
			} else {
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

func (c *streamClient) stop() {
	c.mu.Lock()
	c.stopped = true
	conn := c.conn
	c.cond.Broadcast()
	c.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// progress is how many messages this client received.
func (c *streamClient) progress() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expect
}

// exchange runs two clients until both are done (or the deadline), calling
// during(h5, mini) meanwhile, and checks exactly-once in-order delivery.
func exchange(t *testing.T, h5, mini *streamClient, total int, deadline time.Duration, during func()) {
	var wg sync.WaitGroup
	for _, c := range []*streamClient{h5, mini} {
		wg.Add(1)
		go func(c *streamClient) { defer wg.Done(); c.run(total) }(c)
	}
	duringDone := make(chan struct{})
	go func() { defer close(duringDone); during() }()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(deadline):
		h5.stop()
		mini.stop()
		<-finished
		t.Errorf("the exchange did not finish within %v", deadline)
	}
	<-duringDone
	for _, pair := range [][2]*streamClient{{h5, mini}, {mini, h5}} {
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

// Instances die in the middle of a stream; their clients reconnect to
// another instance and nothing is lost, repeated or reordered.
//
// A death is simulated in-process (see node.kill): the backplane stops
// answering before anything else (so it gives up nothing: no Leave, no
// claim refresh, exactly as a SIGKILLed process), then the listener and
// every connection are reset. TestRelayProcessesSurviveSIGKILL in
// cmd/relay does the same with real processes and SIGKILL.
func TestInstanceDeathMidStream(t *testing.T) {
	const total = 6000
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 3, redisbp.Options{}, func(c *config.Config) { c.History.Size = 20000 })
	urls := []string{nodes[0].url, nodes[1].url, nodes[2].url}
	h5 := newStreamClient(t, urls, 0, "death", "h5", total)
	mini := newStreamClient(t, urls, 1, "death", "miniapp", total)
	start := time.Now()
	exchange(t, h5, mini, total, 60*time.Second, func() {
		// A (h5's instance) dies a third of the way, B (miniapp's, and
		// maybe h5's by then) at two thirds.
		for i, third := range []int{total / 3, 2 * total / 3} {
			for h5.progress() < third || mini.progress() < third {
				time.Sleep(time.Millisecond)
				if time.Since(start) > 50*time.Second {
					return
				}
			}
			nodes[i].kill()
			t.Logf("killed %s after %v", nodes[i].name, time.Since(start).Round(time.Millisecond))
		}
	})
	t.Logf("exchange took %v", time.Since(start).Round(time.Millisecond))
	for _, c := range []*streamClient{h5, mini} {
		if c.reconnects < 1 {
			t.Errorf("%s never reconnected: the deaths did not hit it", c.env)
		}
	}
}

// Redis dies and comes back (empty: it keeps nothing on disk) in the
// middle of a stream between two instances. Sends meanwhile are refused
// with relay.error unavailable (never silently dropped), the sessions stay
// up, and the stream goes on by itself once Redis is back.
func TestRedisRestartMidStream(t *testing.T) {
	const total = 3000
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 2, redisbp.Options{HealthInterval: 200 * time.Millisecond, OpTimeout: time.Second},
		func(c *config.Config) { c.History.Size = 20000 })
	urls := []string{nodes[0].url, nodes[1].url}
	h5 := newStreamClient(t, urls, 0, "restart", "h5", total)
	mini := newStreamClient(t, urls, 1, "restart", "miniapp", total)
	// One message in flight at a time: a refused message is resent before
	// any later one, so the stream stays in order across the outage.
	h5.window, mini.window = 1, 1
	h5.pace, mini.pace = 0, 0
	var outage time.Duration
	exchange(t, h5, mini, total, 60*time.Second, func() {
		deadline := time.Now().Add(30 * time.Second)
		for h5.progress() < total/3 || mini.progress() < total/3 {
			if time.Now().After(deadline) {
				return
			}
			time.Sleep(time.Millisecond)
		}
		// Writes are paused an instant before the kill, so that no script
		// has run without its replies and messages having been sent: a
		// Redis without persistence that crashes in that instant loses
		// what it had just acknowledged (see docs/redis.md).
		if reply, err := redis.Command("CLIENT PAUSE 5000 WRITE"); err != nil || reply != "+OK\r\n" {
			t.Errorf("CLIENT PAUSE: %q %v", reply, err)
		}
		time.Sleep(20 * time.Millisecond)
		down := time.Now()
		redis.Kill()
		time.Sleep(time.Second)
		redis.Restart()
		outage = time.Since(down)
		t.Logf("redis was down for %v", outage.Round(time.Millisecond))
		for _, n := range nodes {
			waitFor(t, n.name+" ready again", 10*time.Second, n.bp.Ready)
		}
	})
	for _, c := range []*streamClient{h5, mini} {
		if c.unavailable == 0 {
			t.Errorf("%s was never refused while Redis was down", c.env)
		}
		if len(c.sessions) != 1 {
			t.Errorf("%s connected %d times; sessions must stay up through a Redis restart", c.env, len(c.sessions))
		}
	}
	for _, n := range nodes {
		t.Logf("%s: %+v", n.name, n.bp.Counters())
	}
}
