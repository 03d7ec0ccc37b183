package core

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
)

// chaosClient is what an application on a flaky mobile network does with
// relay's delivery guarantees: it remembers the last seq it processed,
// reconnects with since, resends unacked ids, and ignores seqs it has seen.
// It counts what reaches its application layer.
type chaosClient struct {
	t            *testing.T
	relayURL     string
	token, env   string
	total        int // messages to send
	window       int // unacked messages allowed in flight
	dialAttempts int

	mu        sync.Mutex
	cond      *sync.Cond
	conn      *fws.Conn
	lastSeq   uint64
	haveSeq   bool
	nextN     int
	unacked   []int // message numbers sent and not yet acked, in order
	expect    int   // next message number expected from the peer
	delivered int
	dups      int // reached the application twice
	reordered int // arrived ahead of one still missing
	seqDups   int // frames dropped by seq dedupe (repeats on the wire)
	resyncs   int // relay.hello with resumed:false after since
	reconnect int
	stopped   bool
	trace     [][2]uint64
}

func newChaosClient(t *testing.T, relayURL, token, env string, total int) *chaosClient {
	// since=0 on the first connect: the peer may have sent before this
	// client ever connected, and those messages wait in the history.
	c := &chaosClient{t: t, relayURL: relayURL, token: token, env: env, total: total, window: 64, haveSeq: true}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *chaosClient) done() bool {
	return c.nextN == c.total && len(c.unacked) == 0 && c.expect == c.total
}

// run connects until everything was sent, acked and received, or stop.
func (c *chaosClient) run(peerTotal int) {
	for {
		c.mu.Lock()
		if c.stopped || (c.done() && c.expect == peerTotal) {
			c.mu.Unlock()
			return
		}
		query := "v=1&token=" + url.QueryEscape(c.token) + "&env=" + c.env
		if c.haveSeq {
			query += fmt.Sprintf("&since=%d", c.lastSeq)
		}
		c.mu.Unlock()
		conn, _, err := fws.DefaultDialer.Dial(c.relayURL+"?"+query, nil)
		if err != nil {
			c.dialAttempts++
			time.Sleep(5 * time.Millisecond)
			continue
		}
		c.session(conn, peerTotal)
	}
}

func (c *chaosClient) session(conn *fws.Conn, peerTotal int) {
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	readerDone := make(chan struct{})
	helloSeen := make(chan struct{})
	go func() {
		defer close(readerDone)
		c.read(conn, helloSeen)
	}()
	select {
	case <-helloSeen:
	case <-readerDone:
		conn.Close()
		return
	}
	// Resend what was never acked, in order and with the same ids, then
	// keep sending new messages within the window.
	c.mu.Lock()
	resend := append([]int(nil), c.unacked...)
	c.mu.Unlock()
	ok := true
	for _, n := range resend {
		if ok = c.write(conn, n); !ok {
			break
		}
	}
	for ok {
		c.mu.Lock()
		for !c.stopped && c.conn == conn && (c.nextN == c.total || len(c.unacked) >= c.window) &&
			!(c.done() && c.expect == peerTotal) {
			c.cond.Wait()
		}
		if c.stopped || c.conn != conn || (c.done() && c.expect == peerTotal) {
			c.mu.Unlock()
			break
		}
		n := c.nextN
		c.nextN++
		c.unacked = append(c.unacked, n)
		c.mu.Unlock()
		ok = c.write(conn, n)
		// About 5,000 messages/s, so that the exchange spans enough cuts
		// however fast the machine is.
		if n%5 == 4 {
			time.Sleep(time.Millisecond)
		}
	}
	conn.Close()
	<-readerDone
}

func (c *chaosClient) write(conn *fws.Conn, n int) bool {
	frame := fmt.Sprintf(`{"type":"chaos","data":{"n":%d},"id":"%s-%d"}`, n, c.env, n)
	return conn.WriteMessage(fws.TextMessage, []byte(frame)) == nil
}

func (c *chaosClient) read(conn *fws.Conn, helloSeen chan struct{}) {
	defer func() {
		c.mu.Lock()
		if c.conn == conn {
			c.conn = nil
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
			if c.haveSeq && !h.Resumed {
				c.resyncs++
			}
			if !c.haveSeq || !h.Resumed {
				c.lastSeq, c.haveSeq = h.Seq, true
			}
			close(helloSeen)
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
		case "chaos":
			if f.Seq <= c.lastSeq {
				c.seqDups++
				break
			}
			c.lastSeq = f.Seq
			var d struct{ N int }
			_ = json.Unmarshal(f.Data, &d)
			c.trace = append(c.trace, [2]uint64{uint64(d.N), f.Seq})
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
		case "relay.error":
			c.t.Errorf("%s: relay.error %s", c.env, f.Data)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

// spyDeliverer records every message the backplane publishes, to show
// where an anomaly came from.
type spyDeliverer struct {
	mu  sync.Mutex
	log []spyEntry
}

type spyEntry struct {
	from string
	n    int
	seq  uint64
}

func (s *spyDeliverer) Deliver(m *Message) {
	var d struct{ N int }
	_ = json.Unmarshal(m.Data, &d)
	s.mu.Lock()
	s.log = append(s.log, spyEntry{m.From, d.N, m.Seq})
	s.mu.Unlock()
}

func (s *spyDeliverer) Event(Event) {}

// cut drops the current connection as a network failure would: no close
// handshake, the socket reset.
func (c *chaosClient) cut() {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return
	}
	if tcp, ok := conn.UnderlyingConn().(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.UnderlyingConn().Close()
	c.mu.Lock()
	c.reconnect++
	c.mu.Unlock()
}

func TestChaosExactlyOnceAcrossRandomDisconnects(t *testing.T) {
	const total = 20000
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 0
		c.History.Size = 20000 // the point is lossless resume inside the window
	})
	spy := &spyDeliverer{}
	defer r.srv.hub.bp.Subscribe("chaos", spy)()
	h5 := newChaosClient(t, r.url, "chaos", "h5", total)
	mini := newChaosClient(t, r.url, "chaos", "miniapp", total)

	stopCutting := make(chan struct{})
	var cutters sync.WaitGroup
	for _, c := range []*chaosClient{h5, mini} {
		cutters.Add(1)
		go func(c *chaosClient) {
			defer cutters.Done()
			for {
				select {
				case <-stopCutting:
					return
				case <-time.After(time.Duration(50+rand.IntN(250)) * time.Millisecond):
					c.cut()
				}
			}
		}(c)
	}
	var clients sync.WaitGroup
	for _, c := range []*chaosClient{h5, mini} {
		clients.Add(1)
		go func(c *chaosClient) { defer clients.Done(); c.run(total) }(c)
	}
	finished := make(chan struct{})
	go func() { clients.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(90 * time.Second):
		for _, c := range []*chaosClient{h5, mini} {
			c.mu.Lock()
			c.stopped = true
			c.cond.Broadcast()
			c.mu.Unlock()
			c.cut()
		}
		<-finished
		t.Error("the exchange did not finish within 90s")
	}
	close(stopCutting)
	cutters.Wait()

	for _, pair := range [][2]*chaosClient{{h5, mini}, {mini, h5}} {
		sender, receiver := pair[0], pair[1]
		lost := sender.nextN - receiver.delivered
		t.Logf("%s→%s: sent %d, delivered %d, lost %d, duplicated %d, reordered %d, reconnects %d (wire repeats dropped by seq %d, resyncs %d)",
			sender.env, receiver.env, sender.nextN, receiver.delivered, lost, receiver.dups, receiver.reordered,
			receiver.reconnect, receiver.seqDups, receiver.resyncs)
		if sender.nextN != total || receiver.delivered != total || lost != 0 || receiver.dups != 0 || receiver.reordered != 0 {
			t.Errorf("%s→%s: want %d sent and delivered exactly once in order", sender.env, receiver.env, total)
		}
		if receiver.dups > 0 || receiver.reordered > 0 {
			shown := 0
			for i, tr := range receiver.trace {
				if i > 0 && tr[0] != receiver.trace[i-1][0]+1 && shown < 3 {
					shown++
					lo, hi := max(0, i-3), min(len(receiver.trace), i+3)
					t.Logf("first anomalies: frames %d..%d (n, seq) = %v", lo, hi, receiver.trace[lo:hi])
					for _, e := range spy.log {
						if e.seq >= receiver.trace[lo][1] && e.seq <= receiver.trace[hi-1][1] {
							t.Logf("  published %s n=%d seq=%d", e.from, e.n, e.seq)
						}
					}
				}
			}
		}
		if receiver.resyncs != 0 {
			t.Errorf("%s: %d reconnects fell outside the history window", receiver.env, receiver.resyncs)
		}
		if receiver.reconnect < 10 {
			t.Errorf("%s: only %d connection cuts; the test did not exercise resume", receiver.env, receiver.reconnect)
		}
	}
}
