package core

import (
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/internal/streamtest"
)

// Two v1 clients exchange 20,000 messages each way while each one's TCP
// connection is reset at random every 50–300 ms; reconnecting with since
// and resending unacked ids, every message must reach the other
// application exactly once and in order. streamtest.Exchange prints sent,
// delivered, lost, duplicated, reordered and reconnects, and checks them.
func TestChaosExactlyOnceAcrossRandomDisconnects(t *testing.T) {
	const total = 20000
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 0
		c.History.Size = 20000 // the point is lossless resume inside the window
	})
	urls := []string{r.url}
	h5 := streamtest.NewStreamClient(t, urls, 0, "chaos", "h5", total)
	mini := streamtest.NewStreamClient(t, urls, 0, "chaos", "miniapp", total)

	stopCutting := streamtest.CutAtRandom([]*streamtest.StreamClient{h5, mini}, 50*time.Millisecond, 300*time.Millisecond)
	streamtest.Exchange(t, h5, mini, total, 90*time.Second, func() {})
	stopCutting()
	for _, c := range []*streamtest.StreamClient{h5, mini} {
		if n := c.Reconnects(); n < 10 {
			t.Errorf("%s: only %d connection cuts; the test did not exercise resume", c.Env(), n)
		}
	}
}

// With the per-connection rate limit far below what the clients send, a
// large share of messages is refused with rate_limited and resent (with
// everything unacked after it, in order) while connections are cut: relay
// holds back what followed a refused message until it is resent, so every
// message still arrives exactly once and in order.
func TestChaosInOrderAcrossRateLimitRetries(t *testing.T) {
	const total = 4000
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 1500
		c.Limits.Burst = 50
		c.History.Size = 20000
	})
	urls := []string{r.url}
	h5 := streamtest.NewStreamClient(t, urls, 0, "chaos-rate", "h5", total)
	mini := streamtest.NewStreamClient(t, urls, 0, "chaos-rate", "miniapp", total)
	h5.Pace, mini.Pace = 0, 0 // as fast as the window allows: far over the limit

	stopCutting := streamtest.CutAtRandom([]*streamtest.StreamClient{h5, mini}, 100*time.Millisecond, 500*time.Millisecond)
	streamtest.Exchange(t, h5, mini, total, 120*time.Second, func() {})
	stopCutting()
	for _, c := range []*streamtest.StreamClient{h5, mini} {
		if c.RateLimited() == 0 {
			t.Errorf("%s: no message was rate limited; the test did not exercise retries", c.Env())
		}
	}
}
