package core

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/internal/attacktest"
)

// fragmented splits text into n frames: a text frame and n-1 continuations.
func fragmented(text string, n int) []byte {
	var out []byte
	size := (len(text) + n - 1) / n
	for i := 0; i < n; i++ {
		lo, hi := min(i*size, len(text)), min((i+1)*size, len(text))
		op := byte(0x0)
		if i == 0 {
			op = 0x1
		}
		out = append(out, attacktest.ClientFrame(i == n-1, op, []byte(text[lo:hi]))...)
	}
	return out
}

func (c *client) writeRaw(b []byte) {
	c.t.Helper()
	if _, err := c.conn.NetConn().Write(b); err != nil {
		c.t.Fatalf("raw write: %v", err)
	}
}

// expectCloseText is expectClose that checks the reason too.
func (c *client) expectCloseText(code int, text string) {
	c.t.Helper()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *fws.CloseError
		if !errors.As(err, &ce) || ce.Code != code || ce.Text != text {
			c.t.Fatalf("connection ended with %v, want close %d %q", err, code, text)
		}
		return
	}
}

func TestFragmentsUpToTheCapMakeOneMessage(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.MaxFragments, c.Limits.MaxFrameBytes = 8, 1024 })
	c, _ := r.v1("frag", "h5")
	peer, _ := r.v1("frag", "miniapp")
	c.readType("relay.presence")
	c.writeRaw(fragmented(`{"type":"parts","data":"abcdefghijklmnopqrstuvwxyz"}`, 8))
	// A ping between fragments does not end the message.
	var b []byte
	b = append(b, attacktest.ClientFrame(false, 0x1, []byte(`{"type":"pinged",`))...)
	b = append(b, attacktest.ClientFrame(true, 0x9, []byte("p"))...)
	b = append(b, attacktest.ClientFrame(true, 0x0, []byte(`"data":1}`))...)
	c.writeRaw(b)
	if got := peer.readType("parts"); got["data"] != "abcdefghijklmnopqrstuvwxyz" {
		t.Fatalf("peer got %v", got)
	}
	peer.readType("pinged")
}

func TestTooManyFragmentsClose1008(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.MaxFragments, c.Limits.MaxFrameBytes = 8, 1024 })
	c, _ := r.v1("frag", "h5")
	c.writeRaw(fragmented(`{"type":"parts","data":"abcdefghijklmnopqrstuvwxyz"}`, 9))
	c.expectCloseText(ClosePolicy, "too many fragments")
	if v := counterValue(t, r, "relay_drops_total", "too_many_fragments"); v != 1 {
		t.Fatalf("too_many_fragments drops = %v, want 1", v)
	}
	r.stillServes()
}

// TestEmptyContinuationFloodIsCut: a message that never ends, made of
// empty continuation frames, is cut at the cap instead of being read for
// as long as the client goes on.
func TestEmptyContinuationFloodIsCut(t *testing.T) {
	r := startRelay(t)
	c, _ := r.v1("flood", "h5")
	flood := attacktest.ClientFrame(false, 0x1, []byte(`{"type":`))
	for len(flood) < 64<<10 {
		flood = append(flood, attacktest.ClientFrame(false, 0x0, nil)...)
	}
	errc := make(chan error, 1)
	go func() {
		// Keep sending until the relay hangs up.
		w := c.conn.NetConn()
		_, err := w.Write(flood)
		empty := bytes.Repeat(attacktest.ClientFrame(false, 0x0, nil), 4096)
		for err == nil {
			_, err = w.Write(empty)
		}
		errc <- err
	}()
	c.expectCloseText(ClosePolicy, "too many fragments")
	_ = c.conn.Close()
	<-errc
	r.stillServes()
}

// TestPipelinedFramesAreWatchedToo: frames sent with the upgrade request,
// before the handshake answer, land where fasthttp buffers requests; the
// guard still counts them.
func TestPipelinedFramesAreWatchedToo(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.MaxFragments, c.Limits.MaxFrameBytes = 4, 1024 })
	addr := strings.TrimPrefix(strings.TrimSuffix(r.url, "/socket"), "ws://")
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /socket?v=1&token=pipe&env=h5 HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	// The fragments' payload holds a blank line too, which must not hide
	// the frames after it.
	msg := []byte(req)
	msg = append(msg, attacktest.ClientFrame(false, 0x1, []byte("{\r\n\r\n"))...)
	for i := 0; i < 10; i++ {
		msg = append(msg, attacktest.ClientFrame(false, 0x0, []byte(" "))...)
	}
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// Server frames are unmasked: read them until the close frame.
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			t.Fatalf("no close frame: %v", err)
		}
		n := int(h[1] & 0x7f)
		if n == 126 {
			var ext [2]byte
			if _, err := io.ReadFull(br, ext[:]); err != nil {
				t.Fatal(err)
			}
			n = int(ext[0])<<8 | int(ext[1])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatal(err)
		}
		if h[0]&0x0f == 0x8 {
			code := int(payload[0])<<8 | int(payload[1])
			if code != ClosePolicy || string(payload[2:]) != "too many fragments" {
				t.Fatalf("close %d %q, want %d too many fragments", code, payload[2:], ClosePolicy)
			}
			return
		}
	}
}

// TestUnfinishedMessageTimesOut: a client that starts a message and then
// only answers pings is cut when message_timeout passes, although its
// pings keep the heartbeat content.
func TestUnfinishedMessageTimesOut(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.MessageTimeout = 300 * time.Millisecond })
	c, _ := r.v1("slow", "h5")
	c.writeRaw(attacktest.ClientFrame(false, 0x1, []byte(`{"type":`)))
	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.conn.NetConn().Write(attacktest.ClientFrame(true, 0x9, nil)); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	c.expectCloseText(ClosePolicy, "message took too long")
	close(stop)
	<-pinged
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("closed after %v, before message_timeout", d)
	}
	r.stillServes()
}

// TestFinishedSlowMessageRestoresTheDeadline: a message that took a while
// but ended leaves the connection under the heartbeat timeout alone.
func TestFinishedSlowMessageRestoresTheDeadline(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.MessageTimeout = 200 * time.Millisecond })
	c, _ := r.v1("slowok", "h5")
	peer, _ := r.v1("slowok", "miniapp")
	c.readType("relay.presence")
	c.writeRaw(attacktest.ClientFrame(false, 0x1, []byte(`{"type":`)))
	time.Sleep(50 * time.Millisecond)
	c.writeRaw(attacktest.ClientFrame(true, 0x0, []byte(`"first"}`)))
	peer.readType("first")
	time.Sleep(400 * time.Millisecond) // twice message_timeout, idle
	c.send(`{"type":"second"}`)
	peer.readType("second")
}

// TestPingFloodEndsIn4029: protocol pings count toward the rate limit.
func TestPingFloodEndsIn4029(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.MessagesPerSecond, c.Limits.Burst = 10, 10 })
	c, _ := r.v1("pings", "h5")
	pings := bytes.Repeat(attacktest.ClientFrame(true, 0x9, []byte("x")), 100)
	c.writeRaw(pings)
	c.expectClose(CloseTooMany)
}

// TestGuardSeesFramesSentWithTheAuthFrame: the guard watches from the
// first frame, the relay.auth one included, so frames that come in the
// same read as it are counted too.
func TestGuardSeesFramesSentWithTheAuthFrame(t *testing.T) {
	r := startAuthRelay(t, hsAuth, func(c *config.Config) {
		c.Limits.MaxFragments, c.Limits.MaxFrameBytes = 8, 1024
	})
	tok := signHS(t, jwt.MapClaims{"sub": "alice"})
	r.secrets = append(r.secrets, tok)
	r.testRelay.t = t
	c := r.dial("v=1&env=h5") // the credential comes as the first frame
	frames := attacktest.ClientFrame(true, 0x1, []byte(`{"type":"relay.auth","data":{"token":"`+tok+`"}}`))
	frames = append(frames, fragmented(`{"type":"parts","data":"abcdefghijklmnopqrstuvwxyz"}`, 9)...)
	c.writeRaw(frames)
	c.expectCloseText(ClosePolicy, "too many fragments")
}
