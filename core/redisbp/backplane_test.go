package redisbp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

func history() config.History {
	return config.History{Size: 100, TTL: time.Minute, MaxTokens: 1000, MaxBytes: 64 << 20}
}

// recorder keeps what a backplane delivered.
type recorder struct {
	mu     sync.Mutex
	msgs   []*core.Message
	events []core.Event
}

func (r *recorder) Deliver(m *core.Message) { r.mu.Lock(); r.msgs = append(r.msgs, m); r.mu.Unlock() }
func (r *recorder) Event(e core.Event)      { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }

func (r *recorder) messages() []*core.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*core.Message(nil), r.msgs...)
}

func (r *recorder) eventList() []core.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]core.Event(nil), r.events...)
}

func waitFor(t testing.TB, what string, wait time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// live waits until bp's subscriptions are live in Redis (History waits
// for them), so that another instance's next publish reaches them.
func live(t testing.TB, bp core.Backplane, token string) {
	t.Helper()
	if _, err := bp.History(context.Background(), token, 0, 0); err != nil {
		t.Fatal(err)
	}
}

func publish(t testing.TB, bp core.Backplane, m ...*core.Message) core.PublishResult {
	t.Helper()
	res, err := bp.Publish(context.Background(), m)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return res
}

func msg(token, from string, n int) *core.Message {
	return &core.Message{Type: "t", Data: json.RawMessage(fmt.Sprint(n)), Token: token, From: from, TS: time.Now().UnixMilli()}
}

func TestNewFailsClearlyWhenRedisIsUnreachable(t *testing.T) {
	srv := redistest.Start(t)
	url := srv.URL()
	srv.Kill()
	start := time.Now()
	_, err := redisbp.New(context.Background(), config.Backplane{Type: config.BackplaneRedis, URL: url, Prefix: "x"},
		redisbp.Options{History: history(), StartTimeout: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "cannot reach redis at "+srv.Addr()) {
		t.Fatalf("New = %v, want a clear error naming the address", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("New took %v to fail", d)
	}
	if _, err := redisbp.New(context.Background(), config.Backplane{URL: "http://nope"}, redisbp.Options{}); err == nil {
		t.Fatal("a non-redis URL was accepted")
	}
}

func TestMessagesRoundTripThroughRedis(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	a := open(t, srv, prefix, redisbp.Options{History: history()})
	b := open(t, srv, prefix, redisbp.Options{History: history()})
	r := &recorder{}
	defer b.Subscribe("tok", r)()
	live(t, b, "tok")
	parsed := core.NewSeedMessageFromText([]byte(`{"type":"add","data":{"k":"<&>"}}`))
	parsed.Resolve()
	sent := []*core.Message{
		{Type: "v1", Data: json.RawMessage("{ \"a\" :\t\"<&>\\u2028\" }"), To: []string{"miniapp"}, ID: "c-1", From: "h5", TS: 17},
		core.NewSeedMessageFromText([]byte("not json at all")),
		parsed,
	}
	for _, m := range sent {
		m.Token = "tok"
		if m.From == "" {
			m.From, m.TS = "miniapp", 42
		}
		publish(t, a, m)
	}
	waitFor(t, "3 deliveries on the other instance", 5*time.Second, func() bool { return len(r.messages()) == 3 })
	h, err := b.History(context.Background(), "tok", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range [][]*core.Message{r.messages(), h.Messages} {
		for i, m := range got {
			want := sent[i]
			if m.Type != want.Type || string(m.Data) != string(want.Data) || fmt.Sprint(m.To) != fmt.Sprint(want.To) ||
				m.ID != want.ID || m.From != want.From || m.Seq != want.Seq || m.TS != want.TS || m.Token != "tok" ||
				string(m.SeedText()) != string(want.SeedText()) {
				t.Fatalf("message %d:\n got  %+v\n want %+v", i, m, want)
			}
		}
	}
}

func TestSeqNeverGoesBackWhenRedisForgetsTheToken(t *testing.T) {
	srv := redistest.Start(t)
	bp := open(t, srv, newPrefix(t), redisbp.Options{History: history()})
	first := msg("tok", "h5", 1)
	publish(t, bp, first)
	if reply, err := srv.Command("FLUSHALL"); err != nil || reply != "+OK\r\n" {
		t.Fatalf("FLUSHALL: %q %v", reply, err)
	}
	// A new life of the token starts its seqs at now*1000: a later
	// millisecond than the last one of its previous life.
	time.Sleep(2 * time.Millisecond)
	second := msg("tok", "h5", 2)
	publish(t, bp, second)
	if second.Seq <= first.Seq {
		t.Fatalf("seq went from %d to %d after the keys vanished", first.Seq, second.Seq)
	}
	h, err := bp.History(context.Background(), "tok", first.Seq, 0)
	if err != nil {
		t.Fatal(err)
	}
	if h.Complete || h.Last != second.Seq || len(h.Messages) != 1 {
		t.Fatalf("resume across lost state: %+v", h)
	}
}

func TestInstancesSeeOneOrder(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	a := open(t, srv, prefix, redisbp.Options{History: history()})
	b := open(t, srv, prefix, redisbp.Options{History: history()})
	ra, rb := &recorder{}, &recorder{}
	defer a.Subscribe("tok", ra)()
	defer b.Subscribe("tok", rb)()
	live(t, a, "tok")
	live(t, b, "tok")
	const each = 300
	var wg sync.WaitGroup
	for i, bp := range []core.Backplane{a, b, a, b} {
		wg.Add(1)
		go func(bp core.Backplane, from string) {
			defer wg.Done()
			for n := 0; n < each; n++ {
				if _, err := bp.Publish(context.Background(), []*core.Message{msg("tok", from, n)}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}(bp, fmt.Sprint("env", i))
	}
	wg.Wait()
	waitFor(t, "every message on both instances", 10*time.Second, func() bool {
		return len(ra.messages()) == 4*each && len(rb.messages()) == 4*each
	})
	ma, mb := ra.messages(), rb.messages()
	next := map[string]int{}
	for i := range ma {
		if ma[i].Seq != mb[i].Seq || ma[i].From != mb[i].From || (i > 0 && ma[i].Seq != ma[i-1].Seq+1) {
			t.Fatalf("delivery %d: a has %d from %s, b has %d from %s", i, ma[i].Seq, ma[i].From, mb[i].Seq, mb[i].From)
		}
		if string(ma[i].Data) != fmt.Sprint(next[ma[i].From]) {
			t.Fatalf("%s out of order at %d", ma[i].From, i)
		}
		next[ma[i].From]++
	}
}

func TestReplacementAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	a := open(t, srv, prefix, redisbp.Options{History: history()})
	b := open(t, srv, prefix, redisbp.Options{History: history()})
	ra := &recorder{}
	defer a.Subscribe("tok", ra)()
	j1, err := a.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "h5", Session: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	j2, err := b.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "h5", Session: "s2"})
	if err != nil || j2.Replaced != "s1" || j2.Epoch <= j1.Epoch {
		t.Fatalf("second join: %+v %v (first %+v)", j2, err, j1)
	}
	if _, err := a.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "h5", Session: "s3", Reject: true}); err != core.ErrEnvTaken {
		t.Fatalf("reject policy across instances: %v", err)
	}
	// The replaced session's instance leaving changes nothing.
	if err := a.Leave(context.Background(), "tok", "h5", "s1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both join events", 5*time.Second, func() bool { return len(ra.eventList()) >= 2 })
	time.Sleep(50 * time.Millisecond)
	ev := ra.eventList()
	if len(ev) != 2 || ev[1] != (core.Event{Kind: core.EventJoin, Env: "h5", Session: "s2", Replaced: true, Epoch: j2.Epoch}) {
		t.Fatalf("events %+v", ev)
	}
}

func TestPresenceOfADeadInstanceExpires(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	opts := redisbp.Options{History: history(), ClaimTTL: 600 * time.Millisecond, RefreshInterval: 150 * time.Millisecond}
	a := open(t, srv, prefix, opts)
	b := open(t, srv, prefix, opts)
	rb := &recorder{}
	defer b.Subscribe("tok", rb)()
	if _, err := a.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "h5", Session: "a1"}); err != nil {
		t.Fatal(err)
	}
	if res, err := b.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "miniapp", Session: "b1"}); err != nil || len(res.Peers) != 1 {
		t.Fatalf("join on b: %+v %v", res, err)
	}
	// A live instance keeps its claims well past their TTL.
	time.Sleep(4 * opts.ClaimTTL)
	for _, e := range rb.eventList() {
		if e.Kind == core.EventLeave {
			t.Fatalf("h5 left while its instance lived: %+v", rb.eventList())
		}
	}
	// a dies: no Leave, no more refreshes.
	diedAt := time.Now()
	_ = a.Close()
	waitFor(t, "b to announce h5 offline", 5*time.Second, func() bool {
		for _, e := range rb.eventList() {
			if e == (core.Event{Kind: core.EventLeave, Env: "h5", Session: "a1"}) {
				return true
			}
		}
		return false
	})
	t.Logf("offline announced %v after the instance died (claim TTL %v, refresh %v)", time.Since(diedAt).Round(time.Millisecond), opts.ClaimTTL, opts.RefreshInterval)
	res, err := b.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "pc", Session: "b2"})
	if err != nil || len(res.Peers) != 1 || res.Peers[0] != "miniapp" {
		t.Fatalf("peers after the death: %+v %v", res, err)
	}
}

func TestRedisRestart(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	opts := redisbp.Options{History: history(), ClaimTTL: time.Second, RefreshInterval: 100 * time.Millisecond,
		HealthInterval: 100 * time.Millisecond, OpTimeout: 500 * time.Millisecond}
	a := open(t, srv, prefix, opts)
	b := open(t, srv, prefix, opts)
	ra := &recorder{}
	defer a.Subscribe("tok", ra)()
	if _, err := a.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "h5", Session: "a1"}); err != nil {
		t.Fatal(err)
	}
	publish(t, b, msg("tok", "miniapp", 0))
	waitFor(t, "the first message", 5*time.Second, func() bool { return len(ra.messages()) == 1 })

	srv.Kill()
	if _, err := b.Publish(context.Background(), []*core.Message{msg("tok", "miniapp", 1)}); err == nil {
		t.Fatal("publish succeeded with Redis down")
	}
	if _, err := b.History(context.Background(), "tok", 0, 0); err == nil {
		t.Fatal("history succeeded with Redis down")
	}
	if _, err := b.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "pc", Session: "b9"}); err == nil {
		t.Fatal("join succeeded with Redis down")
	}
	waitFor(t, "Ready to turn false", 5*time.Second, func() bool { return !a.Ready() && !b.Ready() })

	srv.Restart()
	waitFor(t, "Ready again", 10*time.Second, func() bool { return a.Ready() && b.Ready() })
	// The restarted Redis is empty: a's claim comes back by itself, and a's
	// subscription was renewed, so b's messages reach a again.
	waitFor(t, "a's claim restored", 5*time.Second, func() bool {
		res, err := b.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "miniapp", Session: "b1"})
		return err == nil && len(res.Peers) == 1 && res.Peers[0] == "h5"
	})
	var second *core.Message
	waitFor(t, "a message published after the restart to arrive", 5*time.Second, func() bool {
		second = msg("tok", "miniapp", 2)
		_, err := b.Publish(context.Background(), []*core.Message{second})
		return err == nil
	})
	waitFor(t, "the message after the restart", 5*time.Second, func() bool { return len(ra.messages()) == 2 })
	got := ra.messages()
	if got[1].Seq != second.Seq || got[1].Seq <= got[0].Seq || string(got[1].Data) != "2" {
		t.Fatalf("after restart got seq %d data %s (before: %d)", got[1].Seq, got[1].Data, got[0].Seq)
	}
}

func TestMissedMessagesAreCaughtUpAfterAReconnect(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	opts := redisbp.Options{History: history(), HealthInterval: 100 * time.Millisecond}
	a := open(t, srv, prefix, opts)
	b := open(t, srv, prefix, opts)
	ra := &recorder{}
	defer a.Subscribe("tok", ra)()
	live(t, a, "tok")
	publish(t, b, msg("tok", "miniapp", 0))
	waitFor(t, "the first message", 5*time.Second, func() bool { return len(ra.messages()) == 1 })
	// Cut a's pub/sub connection only; b keeps publishing meanwhile.
	if reply, err := srv.Command("CLIENT KILL TYPE pubsub"); err != nil || !strings.HasPrefix(reply, ":") {
		t.Fatalf("CLIENT KILL: %q %v", reply, err)
	}
	for i := 1; i <= 20; i++ {
		publish(t, b, msg("tok", "miniapp", i))
	}
	waitFor(t, "all 21 messages", 5*time.Second, func() bool { return len(ra.messages()) == 21 })
	for i, m := range ra.messages() {
		if string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("delivery %d is %s", i, m.Data)
		}
	}
	c := a.Counters()
	t.Logf("counters: %+v", c)
	if c.Reconnects == 0 || c.CatchUps == 0 {
		t.Fatalf("the cut was not noticed or nothing was caught up: %+v", c)
	}
}

// A Redis that hangs (stopped, connections open, no answers) makes calls
// fail within their timeout; the silent pub/sub connection is replaced,
// and everything works again once Redis answers.
func TestRedisHang(t *testing.T) {
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	opts := redisbp.Options{History: history(), HealthInterval: 100 * time.Millisecond, OpTimeout: 300 * time.Millisecond}
	a := open(t, srv, prefix, opts)
	b := open(t, srv, prefix, opts)
	ra := &recorder{}
	defer a.Subscribe("tok", ra)()
	live(t, a, "tok")
	publish(t, b, msg("tok", "miniapp", 0))
	waitFor(t, "the first message", 5*time.Second, func() bool { return len(ra.messages()) == 1 })

	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	start := time.Now()
	if _, err := b.Publish(context.Background(), []*core.Message{msg("tok", "miniapp", 1)}); err == nil {
		t.Fatal("publish succeeded with Redis hung")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publish took %v to fail (op timeout %v)", d, opts.OpTimeout)
	}
	waitFor(t, "Ready to turn false", 5*time.Second, func() bool { return !a.Ready() })
	waitFor(t, "the silent pub/sub connection to be given up", 5*time.Second, func() bool { return a.Counters().Reconnects > 0 })
	srv.Resume()
	resumed = true
	waitFor(t, "Ready again", 10*time.Second, func() bool { return a.Ready() && b.Ready() })
	var last *core.Message
	waitFor(t, "a publish to succeed", 5*time.Second, func() bool {
		last = msg("tok", "miniapp", 2)
		_, err := b.Publish(context.Background(), []*core.Message{last})
		return err == nil
	})
	waitFor(t, "the message after the hang", 5*time.Second, func() bool {
		got := ra.messages()
		return len(got) > 0 && got[len(got)-1].Seq == last.Seq
	})
	// The publish that timed out may still have been executed once Redis
	// went on (an ambiguous timeout): it is delivered at most once, in order.
	got := ra.messages()
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("deliveries out of order: %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
	t.Logf("a: %+v (%d deliveries)", a.Counters(), len(got))
}

func TestCloseStopsEverything(t *testing.T) {
	srv := redistest.Start(t)
	before := runtime.NumGoroutine()
	bp, err := redisbp.New(context.Background(), config.Backplane{URL: srv.URL(), Prefix: newPrefix(t)},
		redisbp.Options{History: history(), RefreshInterval: 10 * time.Millisecond, HealthInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	bp.Subscribe("tok", r)
	if _, err := bp.Join(context.Background(), core.JoinRequest{Token: "tok", Env: "h5", Session: "s"}); err != nil {
		t.Fatal(err)
	}
	publish(t, bp, msg("tok", "h5", 1))
	time.Sleep(50 * time.Millisecond)
	if err := bp.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backplane's goroutines to end", 5*time.Second, func() bool { return runtime.NumGoroutine() <= before })
	if _, err := bp.Publish(context.Background(), []*core.Message{msg("tok", "h5", 2)}); err == nil {
		t.Fatal("publish after Close succeeded")
	}
	if reply, err := redisCommandAll(srv, "CLIENT LIST"); err != nil {
		t.Fatal(err)
	} else if n := strings.Count(reply, " laddr="); n > 1 {
		t.Fatalf("%d clients still connected after Close:\n%s", n, reply)
	}
	_ = bp.Close() // twice is fine
}
