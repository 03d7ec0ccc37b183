package redisbp_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
	"github.com/pairrelay/relay/internal/streamtest"
)

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
	h5 := streamtest.NewStreamClient(t, urls, 0, "death", "h5", total)
	mini := streamtest.NewStreamClient(t, urls, 1, "death", "miniapp", total)
	start := time.Now()
	streamtest.Exchange(t, h5, mini, total, 60*time.Second, func() {
		// A (h5's instance) dies a third of the way, B (miniapp's, and
		// maybe h5's by then) at two thirds.
		for i, third := range []int{total / 3, 2 * total / 3} {
			for h5.Progress() < third || mini.Progress() < third {
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
	for _, c := range []*streamtest.StreamClient{h5, mini} {
		if c.Sessions() < 2 {
			t.Errorf("%s never reconnected: the deaths did not hit it", c.Env())
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
	h5 := streamtest.NewStreamClient(t, urls, 0, "restart", "h5", total)
	mini := streamtest.NewStreamClient(t, urls, 1, "restart", "miniapp", total)
	// One message in flight at a time: a refused message is resent before
	// any later one, so the stream stays in order across the outage.
	h5.Window, mini.Window = 1, 1
	h5.Pace, mini.Pace = 0, 0
	var outage time.Duration
	streamtest.Exchange(t, h5, mini, total, 60*time.Second, func() {
		deadline := time.Now().Add(30 * time.Second)
		for h5.Progress() < total/3 || mini.Progress() < total/3 {
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
		// Load balancers learn of it: /readyz turns 503 while Redis is gone.
		readyz := strings.Replace(strings.Replace(nodes[0].url, "ws://", "http://", 1), "/socket", "/readyz", 1)
		waitFor(t, "/readyz to say 503 while Redis is down", 5*time.Second, func() bool {
			return httpStatus(readyz) == http.StatusServiceUnavailable
		})
		time.Sleep(time.Second)
		redis.Restart()
		outage = time.Since(down)
		t.Logf("redis was down for %v", outage.Round(time.Millisecond))
		for _, n := range nodes {
			waitFor(t, n.name+" ready again", 10*time.Second, n.bp.Ready)
		}
		if code := httpStatus(readyz); code != http.StatusOK {
			t.Errorf("/readyz = %d after Redis came back", code)
		}
	})
	for _, c := range []*streamtest.StreamClient{h5, mini} {
		if c.Unavailable() == 0 {
			t.Errorf("%s was never refused while Redis was down", c.Env())
		}
		if c.Sessions() != 1 {
			t.Errorf("%s connected %d times; sessions must stay up through a Redis restart", c.Env(), c.Sessions())
		}
	}
	for _, n := range nodes {
		t.Logf("%s: %+v", n.name, n.bp.Counters())
	}
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
