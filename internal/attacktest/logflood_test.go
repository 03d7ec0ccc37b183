package attacktest_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/internal/attacktest"
)

// TestAttackInvalidFrameFlood: connection after connection (about 20 a
// second) sends 2,000 invalid frames at once (1,796 INFO lines in a second before the fix);
// each is shed by the rate limit or as a slow consumer, and the log gets
// only the first refusals of each and a count of the rest.
func TestAttackInvalidFrameFlood(t *testing.T) {
	r := attacktest.Start(t, attacktest.Options{Config: `listen: "127.0.0.1:0"`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)
	linesBefore := r.LogLineCount()

	const flood = 2000
	var frames []byte
	for range flood {
		frames = append(frames, attacktest.ClientFrame(true, attacktest.OpText, []byte("not json"))...)
	}
	codes := map[int]int{}
	conns := 0
	for start := time.Now(); time.Since(start) < 2*time.Second; {
		c, _, err := fws.DefaultDialer.Dial(r.URL(fmt.Sprintf("v=1&token=garbage-%d&env=h5", conns)), nil)
		if err != nil {
			t.Fatal(err)
		}
		conns++
		ended := make(chan int, 1)
		go func() { ended <- closeCode(c) }()
		if _, err := c.NetConn().Write(frames); err != nil {
			t.Fatal(err)
		}
		connStart := time.Now()
		select {
		case code := <-ended:
			codes[code]++
			if d := time.Since(connStart); d > time.Second {
				t.Logf("connection %d took %v to close with %d", conns, d, code)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a flooding connection was never closed")
		}
		_ = c.Close()
		time.Sleep(50 * time.Millisecond) // a flood of floods, not a connection flood
	}
	stats := pair.StopAfter(3 * time.Second)
	m := r.CheckSurvived(t)
	stats.Check(t, 50*time.Millisecond)
	lines := r.LogLineCount() - linesBefore
	attacktest.LogRow(t, "invalid-frame flood", fmt.Sprintf("%d connections closed (codes %v); %d log lines", conns, codes, lines), m, stats)
	if codes[4029]+codes[4008] != conns {
		t.Errorf("flooding connections closed with %v, want 4029 (rate) or 4008 (not reading its errors)", codes)
	}
	// The first refusals of each connection, and a count when it ends.
	if lines > 12*conns {
		t.Errorf("%d connections of %d invalid frames each wrote %d log lines", conns, flood, lines)
	}
}

// TestAttackPluginLogFlood: a plugin printing 20,000 lines (11 MB of relay
// log before the fix) gets the first lines of its burst logged and the
// rest counted.
func TestAttackPluginLogFlood(t *testing.T) {
	plugin := attacktest.Binary(t, "github.com/pairrelay/relay/plugins/internal/testplugin")
	r := attacktest.Start(t, attacktest.Options{Config: `
listen: "127.0.0.1:0"
plugins:
  - name: tp
    command: ` + plugin + `
routes:
  - match: {type: spew}
    handlers:
      - handler: plugin
        plugin: tp
`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)
	linesBefore, bytesBefore := r.LogLineCount(), r.LogBytes()

	c, _, err := fws.DefaultDialer.Dial(r.URL("v=1&token=spew&env=h5"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const flood = 20000
	start := time.Now()
	if err := c.WriteMessage(fws.TextMessage, []byte(fmt.Sprintf(`{"type":"spew","data":{"n":%d},"id":"s1"}`, flood))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for the ack: %v", err)
		}
		if strings.Contains(string(b), `"relay.ack"`) {
			break
		}
		if strings.Contains(string(b), `"relay.error"`) {
			t.Fatalf("spew refused: %s", b)
		}
	}
	// Every line is either logged or counted; the count comes within a
	// second of the first line left out.
	var logged, counted, countLines int
	deadline := time.Now().Add(30 * time.Second)
	for {
		logged, counted, countLines = 0, 0, 0
		for _, e := range r.LogEntries()[linesBefore:] {
			msg, _ := e["message"].(string)
			switch {
			case strings.HasPrefix(msg, "spew line "):
				logged++
			case msg == "plugin output lines not logged":
				countLines++
				n, _ := e["suppressed"].(float64)
				counted += int(n)
			}
		}
		if logged+counted >= flood || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	elapsed := time.Since(start)
	stats := pair.StopAfter(3 * time.Second)
	m := r.CheckSurvived(t)
	stats.Check(t, 50*time.Millisecond)
	lines, size := r.LogLineCount()-linesBefore, r.LogBytes()-bytesBefore
	attacktest.LogRow(t, "plugin log flood", fmt.Sprintf("%d of %d lines logged, %d counted; %d log lines, %d bytes", logged, flood, counted, lines, size), m, stats)
	if logged+counted != flood {
		t.Errorf("%d plugin lines logged and %d counted, want %d in all", logged, counted, flood)
	}
	if most := 200 + 20*int(elapsed.Seconds()+1); logged > most {
		t.Errorf("%d plugin lines logged in %v, want at most %d", logged, elapsed.Round(time.Millisecond), most)
	}
	if size > 256<<10 {
		t.Errorf("the plugin's burst wrote %d bytes of relay log", size)
	}
}
