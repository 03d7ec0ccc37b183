package attacktest_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/internal/attacktest"
)

// TestAttackFragmentFlood: connections that send one message made of
// endless empty continuation frames (403 M in 30 s before the fix, one
// core burnt per connection) are cut at limits.max_fragments with 1008,
// and reconnect (50 times a second) to do it again. relay survives, everyone else keeps
// their latency, and the log stays quiet.
func TestAttackFragmentFlood(t *testing.T) {
	// The attackers reconnect faster than one address may upgrade: the
	// per-address rate (TestAttackUpgradeFlood) is off here, so that this
	// attack reaches the frame guard on every connection.
	r := attacktest.Start(t, attacktest.Options{Config: `
listen: "127.0.0.1:0"
limits: {connections_per_second_per_ip: 0}
`})
	pair := attacktest.StartPair(t, r, 10*time.Millisecond)
	linesBefore := r.LogLineCount()

	const attackers, duration = 2, 3 * time.Second
	empty := bytes.Repeat(attacktest.ClientFrame(false, attacktest.OpContinuation, nil), 64<<10/6)
	var cut, uncut, conns atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, _, err := fws.DefaultDialer.Dial(r.URL(fmt.Sprintf("v=1&token=frag-%d&env=h5", i)), nil)
				if err != nil {
					t.Errorf("attacker dial: %v", err)
					return
				}
				conns.Add(1)
				codes := make(chan int, 1)
				go func() { codes <- closeCode(c) }()
				nc := c.NetConn()
				_, err = nc.Write(attacktest.ClientFrame(false, attacktest.OpText, []byte(`{"type":`)))
				for err == nil {
					select {
					case <-stop:
						err = errors.New("stopped")
						continue
					default:
					}
					_, err = nc.Write(empty)
				}
				_ = nc.SetDeadline(time.Now().Add(2 * time.Second))
				if code := <-codes; code == 1008 {
					cut.Add(1)
				} else {
					uncut.Add(1)
				}
				_ = c.Close()
				// Reconnecting at once would make this a connection flood,
				// which admission control answers, not the fragment cap.
				select {
				case <-stop:
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
	}
	time.Sleep(duration)
	close(stop)
	wg.Wait()

	stats := pair.StopAfter(3 * time.Second)
	m := r.CheckSurvived(t)
	stats.Check(t, 50*time.Millisecond)
	shed := fmt.Sprintf("%d of %d flooding connections cut with 1008", cut.Load(), conns.Load())
	attacktest.LogRow(t, "fragment flood", shed, m, stats)
	// The last connection of each attacker is stopped by the test itself.
	if cut.Load() < conns.Load()-attackers || cut.Load() == 0 {
		t.Errorf("flooding connections were not cut: %s", shed)
	}
	if lines := r.LogLineCount() - linesBefore; lines > 20 {
		t.Errorf("relay logged %d lines during the attack", lines)
	}
}

// closeCode reads until the connection ends and returns the close code
// (0 when it ended without a close frame).
func closeCode(c *fws.Conn) int {
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ce *fws.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			return 0
		}
	}
}
