package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Frames the bench sends are v1 messages, which the seed wire and the
// baseline forward as text too:
//
//	probe: {"type":"bench","data":{"p":"@w"}}
//	bench: {"type":"bench","data":{"p":"@s0000000042@t0000000001234567890@xxx…"}}
//
// The markers hold no quote or backslash, so they survive the seed wire's
// JSON string encoding and one scan finds them in what any server delivers.
// @s is the per-pair sequence number, @t the send time in ns since epoch
// (the scheduled time in fixed-rate runs).
var (
	markSeq    = []byte("@s")
	markTime   = []byte("@t")
	markProbe  = []byte("@w")
	relayError = []byte(`{"type":"relay.error"`)
	probeFrame = []byte(`{"type":"bench","data":{"p":"@w"}}`)
)

const (
	benchHead  = `{"type":"bench","data":{"p":"@s`
	seqDigits  = 10
	timeDigits = 19
	// minPayload is the smallest frame appendBench can make.
	minPayload = len(benchHead) + seqDigits + 2 + timeDigits + 1 + 3
)

// epoch is the bench's clock origin; now reads the monotonic clock.
var epoch = time.Now()

func now() time.Duration { return time.Since(epoch) }

// appendBench appends a bench frame of exactly size bytes.
func appendBench(dst []byte, size int, seq int64, sent time.Duration) []byte {
	start := len(dst)
	dst = append(dst, benchHead...)
	dst = appendPadded(dst, seq, seqDigits)
	dst = append(dst, markTime...)
	dst = appendPadded(dst, int64(sent), timeDigits)
	dst = append(dst, '@')
	for len(dst)-start < size-3 {
		dst = append(dst, 'x')
	}
	return append(dst, `"}}`...)
}

func appendPadded(dst []byte, v int64, width int) []byte {
	var digits [20]byte
	s := strconv.AppendInt(digits[:0], v, 10)
	for i := len(s); i < width; i++ {
		dst = append(dst, '0')
	}
	return append(dst, s...)
}

// parseBench finds the sequence number and send time in a delivered frame.
func parseBench(msg []byte) (seq int64, sent time.Duration, ok bool) {
	i := bytes.Index(msg, markSeq)
	if i < 0 || len(msg) < i+2+seqDigits+2+timeDigits {
		return 0, 0, false
	}
	seq, err1 := strconv.ParseInt(string(msg[i+2:i+2+seqDigits]), 10, 64)
	j := i + 2 + seqDigits
	if !bytes.Equal(msg[j:j+2], markTime) {
		return 0, 0, false
	}
	t, err2 := strconv.ParseInt(string(msg[j+2:j+2+timeDigits]), 10, 64)
	return seq, time.Duration(t), err1 == nil && err2 == nil
}

// target is where the clients of a run connect.
type target struct {
	addr string
	v1   bool
}

func (t target) url(token, env string) string {
	u := "ws://" + t.addr + "/socket?token=" + token + "&env=" + env
	if t.v1 {
		u += "&v=1"
	}
	return u
}

var dialer = &websocket.Dialer{
	HandshakeTimeout: 10 * time.Second,
	ReadBufferSize:   4096,
	WriteBufferSize:  4096,
	NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := requireLoopback(addr); err != nil {
			return nil, err
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	},
}

// requireLoopback refuses any address but 127.0.0.1.
func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("refusing non-loopback target %s", addr)
	}
	return nil
}

// pair is a sender (env h5) and a receiver (env miniapp) of one token.
type pair struct {
	tx, rx    *websocket.Conn
	ready     chan struct{} // closed when a probe got through
	readyOnce sync.Once
	active    bool          // got through the handshake
	window    chan struct{} // slots of messages in flight (windowed runs)
	nextSeq   int64         // receiver: the sequence number it expects

	mu  sync.Mutex
	lat []time.Duration
}

// run is the clients of one measurement against one server.
type run struct {
	target  target
	tag     string
	latency bool // receivers record delivery latency
	conns   []*websocket.Conn
	pairs   []*pair
	readers sync.WaitGroup
	closing atomic.Bool

	sent, delivered, firstFrames                  atomic.Int64
	dialFailed, notReady, relayErrors, connErrors atomic.Int64
	writeErrors, reordered, stray                 atomic.Int64

	errMu   sync.Mutex
	errSeen map[string]bool
	errs    []string
}

func newRun(t target, tag string) *run {
	return &run{target: t, tag: tag, errSeen: make(map[string]bool)}
}

// noteError keeps the first few distinct errors for the report.
func (r *run) noteError(what string, err error) {
	msg := what + ": " + err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if len(r.errs) < 5 && !r.errSeen[msg] {
		r.errSeen[msg] = true
		r.errs = append(r.errs, msg)
	}
}

// dialAll opens a connection to each URL, conc at a time; failed ones are nil.
func (r *run) dialAll(ctx context.Context, urls []string, conc int) []*websocket.Conn {
	conns := make([]*websocket.Conn, len(urls))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(conc, len(urls)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(urls) || ctx.Err() != nil {
					return
				}
				c, resp, err := dialer.DialContext(ctx, urls[i], nil)
				if err != nil {
					if resp != nil {
						err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
					}
					r.dialFailed.Add(1)
					r.noteError("dial", err)
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			r.conns = append(r.conns, c)
		}
	}
	return conns
}

// connectPairs opens n pairs and starts their readers; window > 0 gives
// each pair that many in-flight slots.
func (r *run) connectPairs(ctx context.Context, n, conc, window int) {
	urls := make([]string, 0, 2*n)
	for i := 0; i < n; i++ {
		token := r.tag + "-" + strconv.Itoa(i)
		urls = append(urls, r.target.url(token, "h5"), r.target.url(token, "miniapp"))
	}
	conns := r.dialAll(ctx, urls, conc)
	for i := 0; i < n; i++ {
		tx, rx := conns[2*i], conns[2*i+1]
		if tx == nil || rx == nil {
			continue // counted in dialFailed; the other one is closed with the run
		}
		p := &pair{tx: tx, rx: rx, ready: make(chan struct{})}
		if window > 0 {
			p.window = make(chan struct{}, window)
		}
		r.pairs = append(r.pairs, p)
		r.startReader(tx, p, false)
		r.startReader(rx, p, true)
	}
}

// startReader reads c until it closes; p is nil for unpaired connections.
func (r *run) startReader(c *websocket.Conn, p *pair, receiver bool) {
	r.readers.Add(1)
	go func() {
		defer r.readers.Done()
		var buf bytes.Buffer
		first := true
		for {
			_, rd, err := c.NextReader()
			if err == nil {
				buf.Reset()
				_, err = buf.ReadFrom(rd)
			}
			if err != nil {
				if !r.closing.Load() {
					r.connErrors.Add(1)
					r.noteError("read", err)
				}
				return
			}
			if first {
				first = false
				r.firstFrames.Add(1)
			}
			r.handle(p, buf.Bytes(), receiver)
		}
	}()
}

// handle accounts for one frame a client received.
func (r *run) handle(p *pair, msg []byte, receiver bool) {
	switch {
	case bytes.Contains(msg, markSeq):
		seq, sent, ok := parseBench(msg)
		if !ok || !receiver || p == nil {
			r.stray.Add(1)
			r.noteError("unexpected frame", errors.New(string(msg)))
			return
		}
		r.delivered.Add(1)
		if seq != p.nextSeq {
			r.reordered.Add(1)
		}
		p.nextSeq = seq + 1
		if r.latency {
			lat := now() - sent
			p.mu.Lock()
			p.lat = append(p.lat, lat)
			p.mu.Unlock()
		}
		if p.window != nil {
			select {
			case <-p.window:
			default:
			}
		}
	case bytes.Contains(msg, markProbe):
		if receiver && p != nil {
			p.readyOnce.Do(func() { close(p.ready) })
		}
	case bytes.HasPrefix(msg, relayError):
		r.relayErrors.Add(1)
		r.noteError("relay.error", errors.New(string(msg)))
	}
	// Anything else is relay.hello or relay.presence.
}

// handshake sends probes through every pair until one arrives, so that both
// ends are known to be joined before any measured message; pairs that do not
// get through within limit are left out of the run.
func (r *run) handshake(ctx context.Context, limit time.Duration) {
	const every = 250 * time.Millisecond
	var wg sync.WaitGroup
	for _, p := range r.pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.tx.SetWriteDeadline(time.Now().Add(limit))
			for tries := 0; tries < int(limit/every); tries++ {
				if err := p.tx.WriteMessage(websocket.TextMessage, probeFrame); err != nil {
					r.writeErrors.Add(1)
					r.noteError("write probe", err)
					return
				}
				select {
				case <-p.ready:
					p.active = true
					return
				case <-ctx.Done():
					return
				case <-time.After(every):
				}
			}
		}()
	}
	wg.Wait()
	for _, p := range r.pairs {
		if !p.active {
			r.notReady.Add(1)
		}
	}
}

func (r *run) active() []*pair {
	var ps []*pair
	for _, p := range r.pairs {
		if p.active {
			ps = append(ps, p)
		}
	}
	return ps
}

// sendWindowed keeps up to cap(p.window) messages in flight until stop.
func (r *run) sendWindowed(p *pair, size int, stop <-chan struct{}) {
	buf := make([]byte, 0, size)
	for seq := int64(0); ; seq++ {
		select {
		case p.window <- struct{}{}:
		case <-stop:
			return
		}
		select {
		case <-stop:
			return
		default:
		}
		buf = appendBench(buf[:0], size, seq, now())
		if err := p.tx.WriteMessage(websocket.TextMessage, buf); err != nil {
			r.writeErrors.Add(1)
			r.noteError("write", err)
			return
		}
		r.sent.Add(1)
	}
}

// sendScheduled sends n messages at first, first+period, … (open loop: a
// late send does not move the schedule, and each message carries its
// scheduled time, so a stall is charged to every message it delays).
func (r *run) sendScheduled(ctx context.Context, p *pair, size, n int, first, period time.Duration) {
	buf := make([]byte, 0, size)
	for i := 0; i < n; i++ {
		sched := first + time.Duration(i)*period
		if d := sched - now(); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			return
		}
		buf = appendBench(buf[:0], size, int64(i), sched)
		if err := p.tx.WriteMessage(websocket.TextMessage, buf); err != nil {
			r.writeErrors.Add(1)
			r.noteError("write", err)
			return
		}
		r.sent.Add(1)
	}
}

// runScheduled sends rate messages per second in total for dur, spread over
// the active pairs with staggered schedules, then waits for deliveries.
func (r *run) runScheduled(ctx context.Context, size int, rate float64, dur time.Duration) error {
	pairs := r.active()
	if len(pairs) == 0 {
		return errors.New("no pair got through the handshake")
	}
	perPair := int(rate * dur.Seconds() / float64(len(pairs)))
	if perPair < 1 {
		return fmt.Errorf("rate %.0f/s for %s is less than one message per pair", rate, dur)
	}
	period := time.Duration(float64(len(pairs)) / rate * float64(time.Second))
	start := now() + 50*time.Millisecond
	var wg sync.WaitGroup
	for k, p := range pairs {
		_ = p.tx.SetWriteDeadline(time.Now().Add(dur + 10*time.Second))
		first := start + time.Duration(k)*period/time.Duration(len(pairs))
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.sendScheduled(ctx, p, size, perPair, first, period)
		}()
	}
	wg.Wait()
	r.drain(3 * time.Second)
	return ctx.Err()
}

// drain waits until every sent message was delivered or limit passed.
func (r *run) drain(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for r.delivered.Load() < r.sent.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// latencies returns every recorded delivery latency.
func (r *run) latencies() []time.Duration {
	var all []time.Duration
	for _, p := range r.pairs {
		p.mu.Lock()
		all = append(all, p.lat...)
		p.mu.Unlock()
	}
	return all
}

// close closes every connection and waits (bounded) for the readers.
func (r *run) close() {
	r.closing.Store(true)
	for _, c := range r.conns {
		_ = c.Close()
	}
	done := make(chan struct{})
	go func() { r.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fmt.Println("  warning: some readers did not end within 5s of closing")
	}
}

// counts summarises what happened to the run's messages and connections.
func (r *run) counts() string {
	sent, delivered := r.sent.Load(), r.delivered.Load()
	s := fmt.Sprintf("pairs %d, sent %d, delivered %d, lost %d", len(r.active()), sent, delivered, sent-delivered)
	for _, c := range []struct {
		name string
		n    int64
	}{
		{"dial failures", r.dialFailed.Load()},
		{"pairs not ready", r.notReady.Load()},
		{"relay.error frames", r.relayErrors.Load()},
		{"connection errors", r.connErrors.Load()},
		{"write errors", r.writeErrors.Load()},
		{"out of order", r.reordered.Load()},
		{"unexpected frames", r.stray.Load()},
	} {
		if c.n != 0 {
			s += fmt.Sprintf(", %s %d", c.name, c.n)
		}
	}
	return s
}

// incomplete reports whether any message was lost or any connection failed.
func (r *run) incomplete() bool {
	return r.sent.Load() != r.delivered.Load() || r.dialFailed.Load()+r.notReady.Load()+r.relayErrors.Load()+
		r.connErrors.Load()+r.writeErrors.Load()+r.reordered.Load()+r.stray.Load() > 0
}

// problems lists the distinct errors seen, if any.
func (r *run) problems() []string {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return append([]string(nil), r.errs...)
}
