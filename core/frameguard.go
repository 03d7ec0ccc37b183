package core

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The WebSocket library reads a fragmented message to its end inside one
// Read call of the message reader: a client sending endless empty
// continuation frames never hands control back to the session, so neither
// the rate limit nor the frame size limit ever sees them. frameConn watches
// the frames at the socket instead. It reads only the frame headers of the
// bytes the library reads anyway, so a normal connection pays a few
// comparisons per socket read, and nothing at all while a message is
// already buffered.

var (
	errTooManyFragments = errors.New("websocket: too many fragments in one message")
	errMessageTimeout   = errors.New("websocket: message not finished in time")
)

// guardListener wraps every accepted connection in a frameConn, after
// admission control (admission.go) let it in; a refused one is answered and
// closed here, and the next one accepted.
type guardListener struct {
	net.Listener
	adm *admission // nil: no admission control (tests of the frame guard)
}

func (l guardListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.adm == nil {
			return &frameConn{Conn: c}, nil
		}
		if fc := l.adm.accept(c); fc != nil {
			return fc, nil
		}
	}
}

// HTTP phases of a connection before its upgrade, for its read deadline.
const (
	httpHeader  uint8 = iota // reading a request's header: header_timeout from its start
	httpRequest              // the header is in; the request is being answered
	httpIdle                 // answered; waiting for the next request: idle_timeout
)

// frameConn is a server-side connection that, once armed, counts the
// fragments of each client message and bounds the time a message may take.
//
// Before it is armed (the HTTP phase), each Read returns at most up to the
// end of a request's header. fasthttp ignores the body of a GET, so after
// it read an upgrade request nothing of what follows sits in its buffer:
// a client that sends frames before the handshake answer (RFC 6455 §4.1
// forbids it) cannot put frames where the guard would not see them.
type frameConn struct {
	net.Conn

	// HTTP phase: pending holds what a read brought in past a header's end;
	// nl tracks a blank line across reads (1: after \n, 2: after \n\r);
	// phase says which timeout the read deadline is (fasthttp's serving
	// goroutine only, until the upgrade).
	pending []byte
	nl      uint8
	phase   uint8

	// Admission: counted by adm from the accept until Close; peerKey is
	// the address counted toward max_connections_per_ip at the accept.
	adm         *admission
	peerKey     netip.Addr
	peerCounted bool
	closed      atomic.Bool
	upgraded    atomic.Bool

	// Set by arm; read only by the reader goroutine afterwards.
	armed        bool
	maxFragments int
	maxMessage   time.Duration

	// Frame parser state (the reader goroutine only).
	hdr       [14]byte
	hdrLen    int
	skip      uint64 // payload bytes of the current frame not yet seen
	open      bool   // a data message has started and its final frame is not fully read
	finalSeen bool   // the current frame of the open message is its last
	fragments int
	off       bool // the stream broke the protocol: the library fails on it, stop watching
	err       error

	// Deadlines: the one the session asked for, and the end of the open
	// message's time (zero while no message is open across reads).
	dmu       sync.Mutex
	readDL    time.Time
	messageDL time.Time
}

// arm starts watching frames. It must be called before the WebSocket
// library reads anything, on the goroutine that then reads (runSession).
func (c *frameConn) arm(maxFragments int, maxMessage time.Duration) {
	c.armed, c.maxFragments, c.maxMessage = true, maxFragments, maxMessage
	if c.adm != nil {
		c.adm.upgraded(c)
		// The pre-upgrade timeouts end here: the session reads under its
		// own deadlines (heartbeat), never the header or idle timeout.
		c.dmu.Lock()
		_ = c.Conn.SetReadDeadline(c.readDL)
		c.dmu.Unlock()
	}
}

// Close closes the connection, and tells admission control once.
func (c *frameConn) Close() error {
	if c.adm != nil && c.closed.CompareAndSwap(false, true) {
		c.adm.released(c)
	}
	return c.Conn.Close()
}

// Write answers a request in the HTTP phase: once its answer goes out, the
// connection waits for its next request under idle_timeout.
func (c *frameConn) Write(p []byte) (int, error) {
	if !c.armed && c.adm != nil && c.phase == httpRequest {
		c.phase = httpIdle
		_ = c.Conn.SetReadDeadline(c.adm.now().Add(c.adm.limits.IdleTimeout))
	}
	return c.Conn.Write(p)
}

// guardOf returns the frameConn under a hijacked connection, if any.
func guardOf(nc net.Conn) *frameConn {
	if u, ok := nc.(interface{ UnsafeConn() net.Conn }); ok {
		nc = u.UnsafeConn()
	}
	fc, _ := nc.(*frameConn)
	return fc
}

func (c *frameConn) Read(p []byte) (int, error) {
	if !c.armed {
		return c.readHTTP(p)
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.open && !c.messageDL.IsZero() && !time.Now().Before(c.messageDL) {
		c.err = errMessageTimeout
		return 0, c.err
	}
	var n int
	var err error
	if len(c.pending) > 0 {
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
	} else {
		n, err = c.Conn.Read(p)
	}
	if err != nil && c.open && !c.messageDL.IsZero() {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(c.messageDL) {
			err = errMessageTimeout
		}
	}
	if n > 0 && !c.off {
		if ok, ferr := c.scan(p[:n]); ferr != nil {
			// The frames before the offending one are the library's to
			// read (a relay.auth frame, say); the next read fails.
			c.err = ferr
			if ok == 0 {
				return 0, ferr
			}
			return ok, nil
		}
		c.trackMessageTime()
	}
	return n, err
}

// readHTTP reads during the HTTP phase, stopping after the first header
// end (a blank line, as fasthttp accepts it: \n\n or \n\r\n).
func (c *frameConn) readHTTP(p []byte) (int, error) {
	var n int
	if len(c.pending) > 0 {
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	} else {
		var err error
		if n, err = c.Conn.Read(p); n == 0 {
			c.timedOut(err)
			return n, err
		}
	}
	if c.phase == httpIdle && c.adm != nil {
		// The next request has begun: its header has header_timeout,
		// however slowly it comes.
		c.phase = httpHeader
		_ = c.Conn.SetReadDeadline(c.adm.now().Add(c.adm.limits.HeaderTimeout))
	}
	for i := 0; i < n; i++ {
		switch b := p[i]; {
		case b == '\n' && c.nl != 0:
			c.nl = 0
			c.phase = httpRequest
			if rest := p[i+1 : n]; len(rest) > 0 {
				// rest is the caller's buffer: keep a copy.
				c.pending = append(append([]byte(nil), rest...), c.pending...)
			}
			return i + 1, nil
		case b == '\n':
			c.nl = 1
		case b == '\r' && c.nl == 1:
			c.nl = 2
		default:
			c.nl = 0
		}
	}
	if len(c.pending) == 0 {
		c.pending = nil
	}
	return n, nil
}

// timedOut counts a connection closed by a pre-upgrade timeout.
func (c *frameConn) timedOut(err error) {
	var ne net.Error
	if c.adm == nil || !errors.As(err, &ne) || !ne.Timeout() {
		return
	}
	which := "header"
	if c.phase == httpIdle {
		which = "idle"
	}
	c.adm.metrics.pendingTimeouts.WithLabelValues(which).Inc()
}

// scan follows the frame headers in b, counting fragments. On a
// violation it returns how many bytes of b come before the offending
// frame's header.
func (c *frameConn) scan(b []byte) (int, error) {
	i := 0
	for i < len(b) {
		if c.skip > 0 {
			if uint64(len(b)-i) < c.skip {
				c.skip -= uint64(len(b) - i)
				return len(b), nil
			}
			i += int(c.skip)
			c.skip = 0
			if c.open && c.finalSeen {
				c.open = false
			}
			continue
		}
		// Collect a header: 2 bytes, the extended length, the mask key.
		start := i - c.hdrLen // negative when the header began in an earlier read
		need := 2
		if c.hdrLen >= 2 {
			need = headerLen(c.hdr[0], c.hdr[1])
		}
		for c.hdrLen < need && i < len(b) {
			c.hdr[c.hdrLen] = b[i]
			c.hdrLen++
			i++
			if c.hdrLen == 2 {
				need = headerLen(c.hdr[0], c.hdr[1])
			}
		}
		if c.hdrLen < need {
			return len(b), nil
		}
		if err := c.frame(); err != nil {
			return max(start, 0), err
		}
		if c.off {
			return len(b), nil
		}
	}
	return len(b), nil
}

func headerLen(b0, b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// frame takes in one complete header.
func (c *frameConn) frame() error {
	h := c.hdr[:c.hdrLen]
	c.hdrLen = 0
	final, opcode := h[0]&0x80 != 0, h[0]&0x0f
	length := uint64(h[1] & 0x7f)
	switch length {
	case 126:
		length = uint64(h[2])<<8 | uint64(h[3])
	case 127:
		length = 0
		for _, x := range h[2:10] {
			length = length<<8 | uint64(x)
		}
	}
	// Anything the library rejects as a protocol error ends the connection
	// when it reaches that frame; watching further would only misread.
	if h[0]&0x70 != 0 || h[1]&0x80 == 0 || length>>63 != 0 {
		c.off = true
		return nil
	}
	switch opcode {
	case 0x1, 0x2:
		if c.open {
			c.off = true
			return nil
		}
		c.open, c.finalSeen, c.fragments = true, final, 1
	case 0x0:
		if !c.open {
			c.off = true
			return nil
		}
		c.fragments++
		if c.maxFragments > 0 && c.fragments > c.maxFragments {
			return errTooManyFragments
		}
		c.finalSeen = final
	case 0x8, 0x9, 0xa:
		if !final || length > 125 {
			c.off = true
			return nil
		}
		// Control frames may come between fragments; they do not end the message.
		c.skip = length
		return nil
	default:
		c.off = true
		return nil
	}
	c.skip = length
	if length == 0 && final {
		c.open = false
	}
	return nil
}

// trackMessageTime starts the open message's clock when a message spans
// socket reads, and stops it when the message is complete. A message that
// arrives within one read never touches the clock.
func (c *frameConn) trackMessageTime() {
	if c.maxMessage <= 0 {
		return
	}
	switch {
	case c.open && c.messageDL.IsZero():
		c.dmu.Lock()
		c.messageDL = time.Now().Add(c.maxMessage)
		c.applyReadDeadlineLocked()
		c.dmu.Unlock()
	case !c.open && !c.messageDL.IsZero():
		c.dmu.Lock()
		c.messageDL = time.Time{}
		c.applyReadDeadlineLocked()
		c.dmu.Unlock()
	}
}

// applyReadDeadlineLocked sets the earlier of the session's read deadline
// and the open message's end, so that a client that stops in the middle
// of a message (while still answering pings) is cut off too.
func (c *frameConn) applyReadDeadlineLocked() {
	dl := c.readDL
	if !c.messageDL.IsZero() && (dl.IsZero() || c.messageDL.Before(dl)) {
		dl = c.messageDL
	}
	_ = c.Conn.SetReadDeadline(dl)
}

func (c *frameConn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.readDL = t
	if c.messageDL.IsZero() {
		return c.Conn.SetReadDeadline(t)
	}
	c.applyReadDeadlineLocked()
	return nil
}

func (c *frameConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}
