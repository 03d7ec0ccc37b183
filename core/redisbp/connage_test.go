package redisbp_test

import (
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
	"github.com/pairrelay/relay/internal/streamtest"
)

// An age of 2 s on two instances sharing Redis: every close at the age
// (4012) sends the client to the other instance, where it resumes with
// since; nothing is lost, repeated or reordered. (The memory backplane's
// test in core cuts connections as well.)
func TestMaxConnectionAgeAcrossInstances(t *testing.T) {
	const total = 8000
	redis := redistest.Start(t)
	nodes := cluster(t, redis, 2, redisbp.Options{}, func(c *config.Config) {
		c.History.Size = 20000
		c.Limits.MaxConnectionAge, c.Limits.MaxConnectionAgeJitter = 2*time.Second, 0.25
	})
	urls := []string{nodes[0].url, nodes[1].url}
	h5 := streamtest.NewStreamClient(t, urls, 0, "age", "h5", total)
	mini := streamtest.NewStreamClient(t, urls, 1, "age", "miniapp", total)
	// At most 1,700 messages a second each way: the exchange takes at
	// least 4.8 s, past two ages of at most 2 s.
	h5.Pace, mini.Pace = 3*time.Millisecond, 3*time.Millisecond
	streamtest.Exchange(t, h5, mini, total, 120*time.Second, func() {})
	for _, c := range []*streamtest.StreamClient{h5, mini} {
		t.Logf("%s: %d connections, %d closed at their age", c.Env(), c.Sessions(), c.Closes(core.CloseMaxAge))
		if c.Closes(core.CloseMaxAge) < 2 {
			t.Errorf("%s: %d connections closed at their age, want at least 2", c.Env(), c.Closes(core.CloseMaxAge))
		}
	}
}
