package attacktest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
)

// Pair is an unrelated pair of wire-v1 clients on a token of its own:
// A sends a message every interval, B answers each at once. Every message
// carries its send time, so both directions give one-way latencies, and
// its number, so that a lost one shows.
//
// The relay's config must let the envs "h5" and "miniapp" connect and
// allow each connection at least 1/interval messages per second (the
// defaults do for 10 ms).
type Pair struct {
	interval time.Duration
	started  time.Time
	a, b     *fws.Conn
	stopSend chan struct{} // A stops sending
	sendDone chan struct{}
	stop     chan struct{}  // the readers stop: the connections are closed
	wg       sync.WaitGroup // the readers

	mu        sync.Mutex
	sent      int             // by A
	atB       map[int]bool    // numbers B received
	answered  map[int]bool    // numbers A got back
	latencies []time.Duration // one-way, both directions
	errs      []string
}

// probe is the data of the pair's messages.
type probe struct {
	N int   `json:"n"`
	T int64 `json:"t"` // send time, Unix ns
}

// StartPair connects the pair and starts the exchange. It stops when the
// test ends if Stop was not called.
func StartPair(t testing.TB, r *Relay, interval time.Duration) *Pair {
	t.Helper()
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	token := "unrelated-pair-" + hex.EncodeToString(rnd[:])
	p := &Pair{interval: interval, stopSend: make(chan struct{}), sendDone: make(chan struct{}),
		stop: make(chan struct{}), atB: map[int]bool{}, answered: map[int]bool{}}
	var err error
	if p.a, err = dialV1(r.URL("v=1&token=" + token + "&env=h5")); err != nil {
		t.Fatalf("unrelated pair: %v", err)
	}
	if p.b, err = dialV1(r.URL("v=1&token=" + token + "&env=miniapp")); err != nil {
		_ = p.a.Close()
		t.Fatalf("unrelated pair: %v", err)
	}
	// A starts sending once it saw B arrive, so nothing is sent to nobody.
	if err := waitType(p.a, "relay.presence"); err != nil {
		p.close()
		t.Fatalf("unrelated pair: %v", err)
	}
	p.started = time.Now()
	p.wg.Add(2)
	go p.send()
	go p.readB()
	go p.readA()
	t.Cleanup(func() { p.Stop() })
	return p
}

func dialV1(url string) (*fws.Conn, error) {
	d := fws.Dialer{HandshakeTimeout: 10 * time.Second}
	c, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if err := waitType(c, "relay.hello"); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

func waitType(c *fws.Conn, typ string) error {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", typ, err)
		}
		var m struct{ Type string }
		if json.Unmarshal(b, &m) == nil && m.Type == typ {
			return nil
		}
	}
}

func (p *Pair) fail(format string, args ...any) {
	p.mu.Lock()
	p.errs = append(p.errs, fmt.Sprintf(format, args...))
	p.mu.Unlock()
}

func (p *Pair) send() {
	defer close(p.sendDone)
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-p.stopSend:
			return
		case <-tick.C:
		}
		frame, _ := json.Marshal(map[string]any{"type": "probe", "data": probe{N: n, T: time.Now().UnixNano()}})
		_ = p.a.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := p.a.WriteMessage(fws.TextMessage, frame); err != nil {
			p.fail("A: send %d: %v", n, err)
			return
		}
		p.mu.Lock()
		p.sent = n
		p.mu.Unlock()
	}
}

// message is what the pair reads: probes, their answers, and system frames.
type message struct {
	Type string
	Data json.RawMessage
}

func (p *Pair) read(c *fws.Conn, who string, on func(probe)) {
	defer p.wg.Done()
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			select {
			case <-p.stop:
			default:
				p.fail("%s: connection lost: %v", who, err)
			}
			return
		}
		now := time.Now()
		var m message
		if err := json.Unmarshal(b, &m); err != nil {
			p.fail("%s: bad frame %q", who, b)
			continue
		}
		switch m.Type {
		case "probe", "probe.back":
			var pr probe
			if err := json.Unmarshal(m.Data, &pr); err != nil {
				p.fail("%s: bad probe %s", who, m.Data)
				continue
			}
			p.mu.Lock()
			p.latencies = append(p.latencies, now.Sub(time.Unix(0, pr.T)))
			p.mu.Unlock()
			on(pr)
		case "relay.error":
			p.fail("%s: relay.error %s", who, m.Data)
		}
	}
}

func (p *Pair) readB() {
	var wmu sync.Mutex
	p.read(p.b, "B", func(pr probe) {
		p.mu.Lock()
		if p.atB[pr.N] {
			p.errs = append(p.errs, fmt.Sprintf("B: probe %d twice", pr.N))
		}
		p.atB[pr.N] = true
		p.mu.Unlock()
		frame, _ := json.Marshal(map[string]any{"type": "probe.back", "data": probe{N: pr.N, T: time.Now().UnixNano()}})
		wmu.Lock()
		defer wmu.Unlock()
		_ = p.b.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := p.b.WriteMessage(fws.TextMessage, frame); err != nil {
			p.fail("B: answer %d: %v", pr.N, err)
		}
	})
}

func (p *Pair) readA() {
	p.read(p.a, "A", func(pr probe) {
		p.mu.Lock()
		p.answered[pr.N] = true
		p.mu.Unlock()
	})
}

// PairStats is what the pair saw.
type PairStats struct {
	Sent     int           // messages A sent
	Received int           // of those, received by B
	Answered int           // answers A got back
	Lost     int           // messages of either direction that never arrived
	P50, P99 time.Duration // one-way latency, both directions
	Max      time.Duration
	Errors   []string // lost connections, relay.errors, send failures
}

func (s PairStats) String() string {
	return fmt.Sprintf("%d sent, %d lost, one-way p50 %v p99 %v max %v",
		s.Sent, s.Lost, s.P50.Round(10*time.Microsecond), s.P99.Round(10*time.Microsecond), s.Max.Round(10*time.Microsecond))
}

// StopAfter is Stop once the pair has run for at least d since it
// started: a p99 needs a few hundred messages to mean something.
func (p *Pair) StopAfter(d time.Duration) PairStats {
	time.Sleep(time.Until(p.started.Add(d)))
	return p.Stop()
}

// Stop ends the exchange: A stops sending, the answers still on their
// way get a few seconds to arrive, and the connections close.
func (p *Pair) Stop() PairStats {
	select {
	case <-p.stop:
		return p.stats()
	default:
	}
	close(p.stopSend)
	<-p.sendDone
	p.mu.Lock()
	sent := p.sent
	p.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		done := len(p.answered) >= sent || len(p.errs) > 0
		p.mu.Unlock()
		if done {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(p.stop)
	p.close()
	p.wg.Wait()
	return p.stats()
}

func (p *Pair) close() {
	_ = p.a.Close()
	_ = p.b.Close()
}

func (p *Pair) stats() PairStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PairStats{Sent: p.sent, Received: len(p.atB), Answered: len(p.answered), Errors: slices.Clone(p.errs)}
	// Numbers past what A counted as sent may still have been written: the
	// count goes up after the write.
	for n := 1; n <= p.sent; n++ {
		if !p.atB[n] {
			s.Lost++
		}
		if !p.answered[n] {
			s.Lost++
		}
	}
	lat := slices.Clone(p.latencies)
	slices.Sort(lat)
	if len(lat) > 0 {
		s.P50 = lat[len(lat)/2]
		s.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
		s.Max = lat[len(lat)-1]
	}
	return s
}

// Check fails the test if the pair lost anything, saw an error, or its
// p99 one-way latency went past maxP99.
func (s PairStats) Check(t testing.TB, maxP99 time.Duration) {
	t.Helper()
	s.CheckDelivery(t)
	if s.P99 > maxP99 {
		t.Errorf("unrelated pair: p99 %v > %v (%s)", s.P99, maxP99, s)
	}
}

// CheckDelivery fails the test if the pair sent nothing, lost messages or
// saw an error; its latency is only reported.
func (s PairStats) CheckDelivery(t testing.TB) {
	t.Helper()
	if s.Sent == 0 {
		t.Errorf("unrelated pair: nothing was sent")
	}
	if s.Lost > 0 || len(s.Errors) > 0 {
		t.Errorf("unrelated pair lost messages: %s; errors: %v", s, s.Errors)
	}
}
