package redisbp_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
	"github.com/pairrelay/relay/internal/streamtest"
)

// Redis is shut down and started again while two clients of one token, on
// different instances of three, stream to each other and their connections
// are cut every 50–300 ms. Once Redis answers again (having loaded its
// dataset, if it keeps one), traffic flows again within 2 s, and every
// message sent from then on reaches the other side exactly once, in order.
// Only what Redis forgot may be lost (the empty restart), and a client
// learns of it once, from resumed:false.
func TestTrafficResumesAfterRedisRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  redistest.Config
	}{
		{"empty", redistest.Config{}},
		{"aof", redistest.Config{AppendOnly: true, SlowLoad: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const total = 6000
			redis := redistest.StartWith(t, tc.cfg)
			nodes := cluster(t, redis, 3, redisbp.Options{}, func(c *config.Config) { c.History.Size = 20000 })
			urls := []string{nodes[0].url, nodes[1].url, nodes[2].url}
			h5 := streamtest.NewStreamClient(t, urls, 0, "restart-chaos", "h5", total)
			mini := streamtest.NewStreamClient(t, urls, 1, "restart-chaos", "miniapp", total)
			h5.Pace, mini.Pace = 5*time.Millisecond, 5*time.Millisecond // about 1,000 messages/s each

			stopCutting := make(chan struct{})
			var cutters sync.WaitGroup
			for _, c := range []*streamtest.StreamClient{h5, mini} {
				cutters.Add(1)
				go func() {
					defer cutters.Done()
					for {
						select {
						case <-stopCutting:
							return
						case <-time.After(time.Duration(50+rand.IntN(250)) * time.Millisecond):
							c.Cut()
						}
					}
				}()
			}
			var ready time.Time
			start := time.Now()
			streamtest.Run(t, h5, mini, total, 60*time.Second, func() {
				for h5.Progress() < total/4 || mini.Progress() < total/4 {
					if time.Since(start) > 30*time.Second {
						t.Error("the stream did not get going")
						return
					}
					time.Sleep(time.Millisecond)
				}
				redis.Stop()
				t.Logf("redis stopped after %v", time.Since(start).Round(time.Millisecond))
				time.Sleep(time.Second)
				redis.Start() // returns once PING is answered without LOADING
				ready = time.Now()
				t.Logf("redis answering again after %v", ready.Sub(start).Round(time.Millisecond))
			})
			close(stopCutting)
			cutters.Wait()
			if ready.IsZero() {
				return
			}
			for _, pair := range [][2]*streamtest.StreamClient{{h5, mini}, {mini, h5}} {
				streamtest.CheckAfter(t, pair[0], pair[1], ready, 2*time.Second)
			}
			for _, c := range []*streamtest.StreamClient{h5, mini} {
				resyncs := c.Resyncs()
				// Redis forgot the token at most once, so each client learns of
				// it at most once; with its data back, never.
				want := 1
				if tc.cfg.AppendOnly {
					want = 0
				}
				if len(resyncs) > want {
					t.Errorf("%s: %d resyncs (resumed:false), want at most %d: %+v", c.Env(), len(resyncs), want, resyncs)
				}
				if c.Reconnects() < 10 {
					t.Errorf("%s: only %d connection cuts; the test did not exercise resume", c.Env(), c.Reconnects())
				}
			}
			for _, n := range nodes {
				t.Logf("%s: %+v", n.name, n.bp.Counters())
			}
		})
	}
}

// A catch-up that cannot read the history (here Redis refuses the
// instance access to the token's keys; after a restart, it answers LOADING
// while it loads its dataset) is retried until it succeeds: the messages
// the instance missed while its pub/sub connection was down are delivered,
// in order, without waiting for another message, and a live message that
// arrives meanwhile waits for them instead of overtaking them (which lost
// them for good).
func TestFailedCatchUpIsRetried(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	redisCmd := func(cmd string) {
		t.Helper()
		if reply, err := srv.Command(cmd); err != nil || (reply[0] != '+' && reply[0] != ':') {
			t.Fatalf("%s: %q %v", cmd, reply, err)
		}
	}
	// b connects as its own Redis user, so that the test can take rights
	// from b alone.
	redisCmd("ACL SETUSER relayb on >pw ~* &* +@all")
	opts := redisbp.Options{History: history(), HealthInterval: 100 * time.Millisecond}
	a := open(t, srv, prefix, opts)
	b, err := redisbp.New(context.Background(), config.Backplane{Type: config.BackplaneRedis,
		URL: "redis://relayb:pw@" + srv.Addr(), Prefix: prefix}, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rb := &recorder{}
	defer b.Subscribe("tok", rb)()
	defer b.Subscribe("other", &recorder{})()
	live(t, b, "tok")
	live(t, b, "other")
	publish(t, a, msg("tok", "miniapp", 0))
	waitFor(t, "the first message", 5*time.Second, func() bool { return len(rb.messages()) == 1 })

	// b's pub/sub connection breaks and cannot be made again for now; a
	// publishes meanwhile.
	redisCmd("ACL SETUSER relayb off")
	redisCmd("CLIENT KILL USER relayb TYPE pubsub")
	waitFor(t, "b to notice", 5*time.Second, func() bool { return !b.Ready() })
	publish(t, a, msg("tok", "miniapp", 1), msg("tok", "miniapp", 2))
	// b connects again, but may not read tok's keys: its catch-up fails.
	sum := sha256.Sum256([]byte("other"))
	redisCmd(fmt.Sprintf("ACL SETUSER relayb resetkeys ~%s:{%s}:* on", prefix, hex.EncodeToString(sum[:16])))
	waitFor(t, "b's pub/sub connection back", 5*time.Second, b.Ready)
	publish(t, a, msg("tok", "miniapp", 3))
	// History of another token b subscribes returns once b's reader has
	// dispatched everything published before: message 3 arrived at b.
	if _, err := b.History(context.Background(), "other", 0, 0); err != nil {
		t.Fatal(err)
	}
	if got := rb.messages(); len(got) != 1 {
		t.Fatalf("b delivered message %s while 1 and 2 were still missing", got[len(got)-1].Data)
	}
	redisCmd("ACL SETUSER relayb allkeys")
	waitFor(t, "every message at b", 5*time.Second, func() bool { return len(rb.messages()) >= 4 })
	// Nothing more comes, in particular no repeat of message 3.
	if _, err := b.History(context.Background(), "tok", 0, 0); err != nil {
		t.Fatal(err)
	}
	got := rb.messages()
	for i, m := range got {
		if string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("delivery %d at b is message %s (%d deliveries)", i, m.Data, len(got))
		}
	}
	if len(got) != 4 {
		t.Fatalf("%d deliveries at b, want 4", len(got))
	}
}
