package core

import (
	"bytes"
	"errors"
	"math"
	"net"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
	"golang.org/x/time/rate"

	"github.com/pairrelay/relay/config"
)

type wireKind uint8

const (
	wireSeed wireKind = iota
	wireV1
)

func (w wireKind) String() string {
	if w == wireV1 {
		return "v1"
	}
	return "seed"
}

type frameOp uint8

const (
	opText frameOp = iota
	opPing
	opPong
	opClose
)

type outFrame struct {
	data []byte
	op   frameOp
}

// closeGrace is how long a closing session waits for the peer to answer
// the close frame before the connection is cut.
const closeGrace = 2 * time.Second

// Session is one client connection. Its handler goroutine is the only
// reader; outbound frames go through a bounded queue drained by a writer
// goroutine that exists only while there is something to send, so an idle
// connection costs no goroutine besides its reader.
type Session struct {
	hub       *Hub
	conn      *websocket.Conn
	id        string
	token     string
	tokenHash string
	env       string
	claims    map[string]any // from auth, handed to handlers with each message
	authState *sessionAuth   // nil unless the credential expires (see expiry.go)
	trace     *traceRef      // the upgrade request's Cloud Trace context; nil without one (tracelog.go)
	wire      wireKind
	ageSlot   uint16 // the age wheel's slot + 1, 0 when not on it; with ageIdx under the wheel's lock (connage.go)
	ageIdx    uint32 // index in that slot
	room      *room
	metrics   *envMetrics

	limiter   *rate.Limiter // nil until the first message, or when unlimited
	single    [1]*Message   // reused to publish one message without allocating
	overStart time.Time     // window in which refused messages are counted toward 4029
	overCount int

	mu     sync.Mutex
	logged *rate.Limiter // refusal log lines; nil until the first refusal
	unlog  int           // refusals not logged since the last logged one
	queue  []outFrame
	queued int // bytes in queue
	// Bytes the writer took from the queue and is writing, for the queue
	// budget's choice of whom to shed (int32 fits the padding before the
	// flags: an idle session must not grow).
	inflight int32
	writing  bool
	closing  bool
	writer   sync.WaitGroup

	pub *publisher // nil until the first message through a BatchPublisher

	// A message refused with a retryable code holds back the later ones
	// until it is resent (see keepOrder).
	held, heldCode string

	// While a joining session catches up on history, live frames wait in
	// pending so that relay.hello and the replay come first. Live messages
	// are in the history too, so pending drops them when it is full
	// (pendingLost) and the replay reads the history once more instead.
	resuming    bool
	pending     []pendingFrame
	pendingLost bool
	replay      *replay // set once relay.hello is queued; see replay.go

	drained chan struct{} // closed when the writer takes the queue; made by a waiting answer
}

type pendingFrame struct {
	m     *Message // nil for a system frame
	frame []byte
}

// enqueue adds a frame for the writer. It never blocks: a session whose
// queue is full is a slow consumer and is closed with 4008.
func (s *Session) enqueue(f outFrame) {
	s.mu.Lock()
	overflow := s.enqueueLocked(f)
	s.mu.Unlock()
	if overflow {
		s.slowConsumer()
	}
}

// enqueueLocked queues f and reports whether the queue overflowed (the
// caller then closes the session, outside the lock).
func (s *Session) enqueueLocked(f outFrame) (overflow bool) {
	if s.closing {
		return false
	}
	limits := &s.hub.cfg.Limits
	// A frame larger than the byte bound still goes out alone: a message
	// the relay accepted must never make its receiver unable to catch up.
	if len(s.queue) > 0 && (len(s.queue) >= limits.SendQueue || s.queued+len(f.data) > limits.SendQueueBytes) {
		return true
	}
	if !s.hub.queues.add(s.hub, len(f.data), len(s.queue) > 0) {
		s.hub.metrics.drops.WithLabelValues("queue_budget").Inc()
		s.hub.queues.shed.Add(1)
		return true
	}
	s.queue = append(s.queue, f)
	s.queued += len(f.data)
	if f.op == opText {
		s.metrics.messagesOut.Inc()
	}
	s.startWriterLocked()
	return false
}

func (s *Session) slowConsumer() {
	s.hub.metrics.drops.WithLabelValues("slow_consumer").Inc()
	s.closeWith(CloseSlowConsumer)
}

// sendText queues a system frame.
func (s *Session) sendText(frame []byte) { s.push(nil, frame) }

// sendAnswer queues a frame that answers the client's own message (an ack, a
// relay.error, a pong). The reader, or the publisher, waits while the
// queue is full instead of overflowing: a client that sends fast and
// reads its answers is no slow consumer, only its writer is behind, and
// waiting stops reading from the client, which is its backpressure. Only
// a queue the writer does not drain within write_timeout overflows.
func (s *Session) sendAnswer(frame []byte) {
	s.mu.Lock()
	if !s.resuming || s.replay != nil {
		limits := &s.hub.cfg.Limits
		var timeout <-chan time.Time
	wait:
		for !s.closing && s.writing && len(s.queue) > 0 &&
			(len(s.queue) >= limits.SendQueue || s.queued+len(frame) > limits.SendQueueBytes) {
			if timeout == nil {
				timeout = time.After(limits.WriteTimeout)
			}
			if s.drained == nil {
				s.drained = make(chan struct{})
			}
			drained := s.drained
			s.mu.Unlock()
			select {
			case <-drained:
				s.mu.Lock()
			case <-timeout:
				s.mu.Lock()
				break wait // queued below, it overflows: a slow consumer after all
			}
		}
	}
	overflow := s.pushLocked(nil, frame)
	s.mu.Unlock()
	if overflow {
		s.slowConsumer()
	}
}

// wakeAnswersLocked releases an answer waiting for room in the queue.
func (s *Session) wakeAnswersLocked() {
	if s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}

// push queues frame, the encoding of m (nil for a system frame), unless the
// session is still catching up, in which case a message waits its turn, as
// does a system frame until relay.hello is queued.
func (s *Session) push(m *Message, frame []byte) {
	s.mu.Lock()
	overflow := s.pushLocked(m, frame)
	s.mu.Unlock()
	if overflow {
		s.slowConsumer()
	}
}

// pushLocked is push with s.mu held; it reports whether the queue
// overflowed (the caller then closes the session, outside the lock).
func (s *Session) pushLocked(m *Message, frame []byte) (overflow bool) {
	switch {
	case !s.resuming || (m == nil && s.replay != nil):
		return s.enqueueLocked(outFrame{data: frame, op: opText})
	case m != nil && len(s.pending) >= s.hub.cfg.Limits.SendQueue:
		s.pendingLost = true
		return false
	case m == nil && len(s.pending) >= s.hub.cfg.Limits.SendQueue:
		return true
	}
	s.pending = append(s.pending, pendingFrame{m: m, frame: frame})
	return false
}

// encode returns the frame s's wire makes of m.
func (s *Session) encode(m *Message) []byte {
	if s.wire == wireV1 {
		return m.appendV1(make([]byte, 0, len(m.Data)+len(m.Type)+96))
	}
	return m.appendSeed(make([]byte, 0, len(m.seed)+len(m.Data)+32))
}

func (s *Session) startWriterLocked() {
	if !s.writing {
		s.writing = true
		s.writer.Add(1)
		go s.writeLoop()
	}
}

// closeWith sends the close frame with code after what is already queued
// (except for a slow consumer, whose backlog is dropped) and stops taking
// frames. The reader ends when the peer answers or closeGrace passes.
func (s *Session) closeWith(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	s.closing = true
	s.wakeReplayLocked()
	s.wakeAnswersLocked()
	if code == CloseSlowConsumer {
		s.dropQueueLocked()
	}
	s.queue = append(s.queue, outFrame{data: websocket.FormatCloseMessage(code, closeReasons[code]), op: opClose})
	s.startWriterLocked()
	s.hub.metrics.closes.WithLabelValues(closeCodeLabel(code)).Inc()
}

func (s *Session) writeLoop() {
	defer s.writer.Done()
	var spare []outFrame
	for {
		s.mu.Lock()
		s.inflight = 0 // the last batch is written
		batch := s.queue
		if len(batch) == 0 {
			s.writing = false
			s.mu.Unlock()
			return
		}
		// The batch's bytes count toward the queue budget until written.
		taken := s.queued
		s.queue, s.queued = spare[:0], 0
		s.inflight = int32(min(taken, math.MaxInt32))
		s.wakeReplayLocked()
		s.wakeAnswersLocked()
		s.mu.Unlock()
		ok := s.writeBatch(batch)
		s.hub.queues.release(taken)
		if !ok {
			s.mu.Lock()
			s.inflight = 0
			s.mu.Unlock()
			return
		}
		clear(batch)
		spare = batch
	}
}

// maxWriteChunk bounds how much of a batch goes into one write call.
const maxWriteChunk = 64 << 10

var writeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeBatch writes the frames with as few write calls as it can: frames
// are framed here and written together, which is where a busy connection
// saves its system calls. Every write call carries whole frames, and Go
// serialises write calls on a connection, so the pongs the library writes
// on its own never land inside one of these frames. It reports whether the
// session may go on writing.
func (s *Session) writeBatch(batch []outFrame) bool {
	netConn := s.conn.NetConn()
	// A write deadline that fires leaves the connection unusable, so any
	// write error ends the session.
	deadline := time.Now().Add(s.hub.cfg.Limits.WriteTimeout)
	_ = netConn.SetWriteDeadline(deadline)
	bufp := writeBuffers.Get().(*[]byte)
	buf := (*bufp)[:0]
	ok := true
	for i := range batch {
		f := &batch[i]
		switch f.op {
		case opText:
			buf = appendFrame(buf, opcodeText, f.data)
		case opPing:
			buf = appendFrame(buf, opcodePing, nil)
		case opPong:
			buf = appendFrame(buf, opcodePong, f.data)
		case opClose:
			if ok = s.flush(netConn, buf); ok {
				_ = s.conn.WriteControl(websocket.CloseMessage, f.data, deadline)
				_ = s.conn.SetReadDeadline(time.Now().Add(closeGrace))
				s.stopWriting()
				ok = false
			}
			buf = buf[:0]
		}
		if !ok {
			break
		}
		if len(buf) >= maxWriteChunk {
			ok = s.flush(netConn, buf)
			buf = buf[:0]
		}
	}
	if ok {
		ok = s.flush(netConn, buf)
	}
	if cap(buf) <= maxWriteChunk*2 {
		*bufp = buf[:0]
		writeBuffers.Put(bufp)
	}
	return ok
}

// flush writes buf, ending the session on an error.
func (s *Session) flush(netConn net.Conn, buf []byte) bool {
	if len(buf) == 0 {
		return true
	}
	if _, err := netConn.Write(buf); err != nil {
		s.stopWriting()
		_ = netConn.Close()
		return false
	}
	return true
}

const (
	opcodeText = 0x1
	opcodePing = 0x9
	opcodePong = 0xA
)

// appendFrame appends an unmasked, final server frame (RFC 6455 §5.2).
func appendFrame(dst []byte, opcode byte, payload []byte) []byte {
	dst = append(dst, 0x80|opcode)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, payload...)
}

// dropQueueLocked forgets what is queued and not yet taken by the writer.
func (s *Session) dropQueueLocked() {
	s.hub.queues.release(s.queued)
	s.queue, s.queued = nil, 0
}

func (s *Session) stopWriting() {
	s.mu.Lock()
	s.closing = true
	s.dropQueueLocked()
	s.writing = false
	s.wakeReplayLocked()
	s.wakeAnswersLocked()
	s.mu.Unlock()
}

// run is the session's reader; it returns when the connection is done and
// no goroutine uses the connection any more.
func (s *Session) run() {
	h := s.hub
	timeout := h.cfg.Heartbeat.Timeout
	s.conn.SetReadLimit(int64(h.cfg.Limits.MaxFrameBytes))
	_ = s.conn.SetReadDeadline(time.Now().Add(timeout))
	// Control frames count toward the rate like messages, or a flood of
	// pings or pongs would cost relay work without limit.
	s.conn.SetPongHandler(func(string) error {
		s.allow()
		return s.conn.SetReadDeadline(time.Now().Add(timeout))
	})
	// A client's own pings show it is alive too.
	s.conn.SetPingHandler(func(data string) error {
		if !s.allow() {
			return nil // refused: no pong
		}
		_ = s.conn.SetReadDeadline(time.Now().Add(timeout))
		// The pong goes through the writer, between frames: written by the
		// library, its short deadline would become the connection's while
		// the writer is in the middle of a large frame, and cut it.
		// A pong that finds the queue full is dropped, not an overflow.
		s.mu.Lock()
		_ = s.enqueueLocked(outFrame{data: []byte(data), op: opPong})
		s.mu.Unlock()
		return nil
	})
	// Moving the read deadline on every frame is measurable on a busy
	// connection; moving it when a slice of the timeout has passed is as safe.
	refresh := min(timeout/8, time.Second)
	lastRefresh := time.Now()
	for {
		op, r, err := s.conn.NextReader()
		if err != nil {
			s.readFailed(err)
			break
		}
		if now := time.Now(); now.Sub(lastRefresh) >= refresh {
			_ = s.conn.SetReadDeadline(now.Add(timeout))
			lastRefresh = now
		}
		buf := getReadBuffer()
		if _, err := buf.ReadFrom(r); err != nil {
			putReadBuffer(buf)
			s.readFailed(err)
			break
		}
		if op == websocket.TextMessage {
			s.handleText(buf.Bytes())
		} else {
			s.handleBinary()
		}
		putReadBuffer(buf)
	}
	s.mu.Lock()
	s.closing = true
	s.dropQueueLocked()
	s.wakeReplayLocked()
	s.wakeAnswersLocked()
	replay := s.replay
	s.mu.Unlock()
	if replay != nil {
		replay.done.Wait()
	}
	// What the reader took in is published (its answers go nowhere now)
	// before the session leaves, as the synchronous path does.
	if s.pub != nil {
		s.pub.wg.Wait()
	}
	s.logSuppressed()
	h.leave(s)
	// Unblock a writer stuck on a dead peer before waiting for it: the
	// connection must not be used once this handler returns.
	_ = s.conn.NetConn().Close()
	s.writer.Wait()
}

// clientFrameChunk is the frame size Go WebSocket clients (gorilla and
// fasthttp/websocket, 4 KiB write buffers) split a long message into.
const clientFrameChunk = 4096

// fragmentCap is the fragment limit in effect: never so low that a
// message of limits.max_frame_bytes sent in 4 KiB frames is refused.
func fragmentCap(l *config.Limits) int {
	if l.MaxFragments <= 0 {
		return 0
	}
	return max(l.MaxFragments, (l.MaxFrameBytes+clientFrameChunk-1)/clientFrameChunk)
}

func (s *Session) readFailed(err error) {
	var drop, reason string
	switch {
	case err == websocket.ErrReadLimit:
		// The library has sent the close frame itself.
		s.hub.metrics.drops.WithLabelValues("frame_too_large").Inc()
		s.hub.metrics.closes.WithLabelValues(closeCodeLabel(CloseTooLarge)).Inc()
		return
	case errors.Is(err, errTooManyFragments):
		drop, reason = "too_many_fragments", "too many fragments"
	case errors.Is(err, errMessageTimeout):
		drop, reason = "message_timeout", "message took too long"
	default:
		return
	}
	s.hub.metrics.drops.WithLabelValues(drop).Inc()
	s.hub.metrics.closes.WithLabelValues(closeCodeLabel(ClosePolicy)).Inc()
	s.log().Debug("connection closed: "+reason, "token", s.tokenHash, "env", s.env, "code", ClosePolicy)
	// The reader stops here, so the close frame goes out at once rather
	// than through the queue the session is about to drop.
	_ = s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(ClosePolicy, reason), time.Now().Add(time.Second))
}

func (s *Session) handleBinary() {
	s.allow()
	s.hub.metrics.drops.WithLabelValues("binary").Inc()
	s.refuse("", &ClientError{Code: ErrBinary, Message: "binary frames are not relayed; send JSON text"}, "")
}

func (s *Session) handleText(text []byte) {
	s.metrics.messagesIn.Inc()
	// Every frame counts toward the rate, so a flood of garbage ends in 4029 too.
	allowed := s.allow()
	var m *Message
	if s.wire == wireV1 {
		m = &Message{}
		if cerr := parseV1(text, m); cerr != nil {
			s.hub.metrics.drops.WithLabelValues(cerr.Code).Inc()
			s.refuse("", cerr, "")
			return
		}
		if m.Type == pingType {
			s.sendAnswer(pongFrame)
			return
		}
		if m.Type == refreshType {
			if allowed {
				s.refreshAuth(m)
			} else {
				s.refuse(m.ID, &ClientError{Code: ErrRateLimited, Message: "too many messages: slow down"}, "")
			}
			return
		}
	} else {
		if !utf8.Valid(text) {
			// The original relay's ws library closed such a connection with 1007.
			s.hub.metrics.drops.WithLabelValues(ErrInvalidUTF8).Inc()
			s.closeWith(closeInvalidPayload)
			return
		}
		m = newSeedMessage(bytes.Clone(text))
	}
	if !allowed {
		s.hub.metrics.drops.WithLabelValues(ErrRateLimited).Inc()
		cerr := &ClientError{Code: ErrRateLimited, Message: "too many messages: slow down"}
		s.queuePublish(pubItem{id: m.ID, refusal: cerr}) // after the answers of what is queued
		return
	}
	m.Token, m.From, m.TS, m.Claims = s.token, s.env, time.Now().UnixMilli(), s.claims
	s.hub.accept(s, m)
}

// allow applies the per-connection message rate. A client that keeps
// sending far past its limit is disconnected with 4029.
func (s *Session) allow() bool {
	limits := &s.hub.cfg.Limits
	if limits.MessagesPerSecond <= 0 {
		return true
	}
	if s.limiter == nil {
		s.limiter = rate.NewLimiter(rate.Limit(limits.MessagesPerSecond), limits.Burst)
	}
	if s.limiter.Allow() {
		return true
	}
	now := time.Now()
	if now.Sub(s.overStart) > time.Second {
		s.overStart, s.overCount = now, 0
	}
	s.overCount++
	if s.overCount > limits.Burst {
		s.closeWith(CloseTooMany)
	}
	return false
}

// refuse tells the sender why its message went nowhere: a relay.error on
// wire v1; seed clients have no such frame, so there it is only logged.
func (s *Session) refuse(id string, cerr *ClientError, route string) {
	ref := newRef()
	s.hub.metrics.errors.WithLabelValues(cerr.Code).Inc()
	if suppressed, ok := s.mayLog(); ok {
		attrs := []any{"ref", ref, "code", cerr.Code, "reason", cerr.Message,
			"token", s.tokenHash, "env", s.env, "wire", s.wire.String(), "route", route}
		if suppressed > 0 {
			attrs = append(attrs, "suppressed", suppressed)
		}
		if cerr.cause != nil {
			s.log().Warn("message refused: handler failed", append(attrs, "err", cerr.cause.Error())...)
		} else {
			s.log().Info("message refused", attrs...)
		}
	}
	if s.wire == wireV1 {
		s.sendAnswer(encodeSystem("relay.error", errorData{ID: id, Code: cerr.Code, Message: cerr.Message, Route: route, Ref: ref}))
	}
}

// A session logs the first refusals of a burst and then about one a
// second, so that a flood of bad frames cannot flood the log; the next
// line logged says how many were left out.
// Sessions together get a budget of their own, so that many connections
// each flooding a little cannot flood the log either.
const (
	refusalLogBurst = 10
	refusalLogRate  = 1 // lines per second after the burst

	processRefusalLogBurst = 200
	processRefusalLogRate  = 50
)

// mayLog reports whether a refusal is logged, and how many were not
// since the last one that was.
func (s *Session) mayLog() (suppressed int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logged == nil {
		s.logged = rate.NewLimiter(refusalLogRate, refusalLogBurst)
	}
	if !s.logged.Allow() || !s.hub.refusalLog.Allow() {
		s.unlog++
		return 0, false
	}
	suppressed, s.unlog = s.unlog, 0
	return suppressed, true
}

// logSuppressed logs, when a session ends, the refusals it left out of the
// log since its last logged one. When the process's budget leaves that
// line out too, the count goes to the next session's line.
func (s *Session) logSuppressed() {
	s.mu.Lock()
	n := int64(s.unlog)
	s.unlog = 0
	s.mu.Unlock()
	if n == 0 {
		return
	}
	if !s.hub.refusalLog.Allow() {
		s.hub.unlogged.Add(n)
		return
	}
	n += s.hub.unlogged.Swap(0)
	s.log().Info("message refusals not logged", "suppressed", n, "token", s.tokenHash, "env", s.env)
}

var readBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getReadBuffer() *bytes.Buffer { return readBuffers.Get().(*bytes.Buffer) }

func putReadBuffer(b *bytes.Buffer) {
	// Keep rare huge frames from pinning memory in the pool.
	if b.Cap() > 64<<10 {
		return
	}
	b.Reset()
	readBuffers.Put(b)
}

// ack confirms a client id on wire v1 (seed clients have no ids).
func (s *Session) ack(id string, seq uint64) {
	if s.wire == wireV1 {
		s.sendAnswer(ackFrame(id, seq))
	}
}
