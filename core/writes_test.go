package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
)

// TestLargeFramesToASlowReaderArriveWhole: frames far bigger than the
// socket takes at once, to a receiver that reads late; the receiver's
// pings, answered by the WebSocket library while the writer goroutine is
// in the middle of a frame, must never land inside one of them.
func TestLargeFramesToASlowReaderArriveWhole(t *testing.T) {
	const size = 4 << 20
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MaxFrameBytes = 8 << 20
		c.Limits.SendQueueBytes = 64 << 20
		c.Limits.MessagesPerSecond = 0
		// The reader is late on purpose; under CPU contention writing 16
		// MiB may take longer than the default, which is not under test.
		c.Limits.WriteTimeout = 2 * time.Minute
	})
	a, _ := r.v1("big", "h5")
	b, _ := r.v1("big", "miniapp")
	a.readType("relay.presence") // b's arrival
	const n = 4
	for i := range n {
		payload := strings.Repeat(string(rune('a'+i)), size)
		a.send(fmt.Sprintf(`{"type":"big","data":{"i":%d,"p":%q}}`, i, payload))
	}
	// b has read nothing yet; now it pings the relay between reads.
	pongs := make(chan string, n)
	b.conn.SetPongHandler(func(data string) error { pongs <- data; return nil })
	for i := range n {
		if err := b.conn.WriteControl(fws.PingMessage, []byte(fmt.Sprint("p", i)), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		_ = b.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, frame, err := b.conn.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		var m struct {
			Type string
			Data struct {
				I int
				P string
			}
		}
		if err := json.Unmarshal(frame, &m); err != nil {
			t.Fatalf("frame %d is not whole JSON (%d bytes): %v", i, len(frame), err)
		}
		if m.Data.I != i || len(m.Data.P) != size || strings.Trim(m.Data.P, string(rune('a'+i))) != "" {
			t.Fatalf("frame %d: got i=%d with %d bytes of payload", i, m.Data.I, len(m.Data.P))
		}
	}
	// relay.pong leaves after every pong queued before it; reading it lets
	// the library hand those pongs to the handler.
	b.send(`{"type":"relay.ping"}`)
	b.readType("relay.pong")
	close(pongs)
	var got []string
	for p := range pongs {
		got = append(got, p)
	}
	if strings.Join(got, ",") != "p0,p1,p2,p3" {
		t.Fatalf("pongs %v, want p0…p3 in order", got)
	}
	r.stillServes()
}

// TestClientCloseIsAnswered: a client's close frame is echoed with its
// code, as RFC 6455 asks, also while the relay is writing to it.
func TestClientCloseIsAnswered(t *testing.T) {
	r := startRelay(t)
	for _, busy := range []bool{false, true} {
		tok := fmt.Sprint("close-", busy)
		a, _ := r.v1(tok, "h5")
		b, _ := r.v1(tok, "miniapp")
		a.readType("relay.presence")
		if busy {
			for range 50 {
				a.send(`{"type":"x","data":"` + strings.Repeat("y", 4000) + `"}`)
			}
		}
		if err := b.conn.WriteControl(fws.CloseMessage, fws.FormatCloseMessage(4000, "bye"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		_ = b.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, _, err := b.conn.ReadMessage()
			if err == nil {
				continue // frames written before the close
			}
			var ce *fws.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("busy=%v: connection ended with %v, want the close echoed", busy, err)
			}
			if ce.Code != 4000 {
				t.Fatalf("busy=%v: close echoed with %d, want 4000", busy, ce.Code)
			}
			break
		}
		_ = b.conn.Close()
	}
	r.stillServes()
}

// TestWritesAfterAnIdleWriterAndUnderLoadKeepOrder: messages spaced out
// (a writer goroutine each) and in bursts (one writer for many) arrive in
// order.
func TestWritesAfterAnIdleWriterAndUnderLoadKeepOrder(t *testing.T) {
	r := startRelay(t, func(c *config.Config) { c.Limits.MessagesPerSecond = 0 })
	a, _ := r.v1("order", "h5")
	b, _ := r.v1("order", "miniapp")
	a.readType("relay.presence")
	const n = 600
	go func() {
		for i := range n {
			if i%100 < 20 {
				time.Sleep(2 * time.Millisecond) // the writer goroutine ends between messages
			}
			a.send(fmt.Sprintf(`{"type":"n","data":%d}`, i))
		}
	}()
	for i := range n {
		m := b.readType("n")
		if got, _ := m["data"].(float64); int(got) != i {
			t.Fatalf("message %d: got %v", i, m["data"])
		}
	}
}
