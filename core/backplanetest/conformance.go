// Package backplanetest is the conformance suite every core.Backplane
// implementation must pass: ordering, history, resume windows and dedupe.
package backplanetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// Factory returns a fresh backplane with the given history bounds; the
// suite closes it.
type Factory func(t *testing.T, opts config.History) core.Backplane

func defaults() config.History {
	return config.History{Size: 100, TTL: time.Minute, MaxTokens: 1000, MaxBytes: 64 << 20}
}

// Run runs every conformance test against the backplanes newBackplane makes.
func Run(t *testing.T, newBackplane Factory) {
	open := func(t *testing.T, opts config.History) core.Backplane {
		bp := newBackplane(t, opts)
		t.Cleanup(func() { _ = bp.Close() })
		return bp
	}
	t.Run("SeqIncreasesPerToken", func(t *testing.T) { seqIncreases(t, open(t, defaults())) })
	t.Run("SubscribersSeeSeqOrder", func(t *testing.T) { subscribersSeeOrder(t, open(t, defaults())) })
	t.Run("ConcurrentPublishersKeepOrder", func(t *testing.T) { concurrentOrder(t, open(t, defaults())) })
	t.Run("Unsubscribe", func(t *testing.T) { unsubscribe(t, open(t, defaults())) })
	t.Run("HistorySince", func(t *testing.T) { historySince(t, open(t, defaults())) })
	t.Run("HistoryPages", func(t *testing.T) { historyPages(t, open(t, defaults())) })
	t.Run("HistoryWindowBySize", func(t *testing.T) {
		opts := defaults()
		opts.Size = 5
		historyWindow(t, open(t, opts))
	})
	t.Run("HistoryWindowByAge", func(t *testing.T) {
		opts := defaults()
		opts.TTL = 300 * time.Millisecond
		historyAge(t, open(t, opts))
	})
	t.Run("HistoryWindowByTokenBytes", func(t *testing.T) {
		opts := defaults()
		opts.MaxTokenBytes = tokenBytes
		historyTokenBytes(t, open(t, opts))
	})
	t.Run("BatchGetsConsecutiveSeqs", func(t *testing.T) { batch(t, open(t, defaults())) })
	t.Run("DedupeByClientID", func(t *testing.T) { dedupe(t, open(t, defaults())) })
	// Only for a backplane that has it; the others pass trivially.
	t.Run("PublishBatches", func(t *testing.T) { publishBatches(t, open(t, defaults())) })
	t.Run("DedupeEndsWithWindow", func(t *testing.T) {
		opts := defaults()
		opts.Size = 3
		dedupeWindow(t, open(t, opts))
	})
	t.Run("JoinLeavePresence", func(t *testing.T) { joinLeave(t, open(t, defaults())) })
	t.Run("JoinPolicies", func(t *testing.T) { joinPolicies(t, open(t, defaults())) })
	t.Run("HistoryOff", func(t *testing.T) {
		opts := defaults()
		opts.Size = 0
		historyOff(t, open(t, opts))
	})
}

var tokenCounter struct {
	sync.Mutex
	n int
}

// newToken gives each test its own token, so shared backends do not mix.
func newToken(t *testing.T) string {
	tokenCounter.Lock()
	defer tokenCounter.Unlock()
	tokenCounter.n++
	return fmt.Sprintf("conf-%s-%d-%d", t.Name(), time.Now().UnixNano(), tokenCounter.n)
}

func msg(token, from string, n int) *core.Message {
	return &core.Message{Type: "t", Data: json.RawMessage(fmt.Sprint(n)), Token: token, From: from, TS: time.Now().UnixMilli()}
}

func publish(t *testing.T, bp core.Backplane, m ...*core.Message) core.PublishResult {
	t.Helper()
	res, err := bp.Publish(context.Background(), m)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return res
}

// recorder is a Deliverer that keeps what it was handed.
type recorder struct {
	mu     sync.Mutex
	msgs   []*core.Message
	events []core.Event
}

func (r *recorder) Deliver(m *core.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

func (r *recorder) Event(e core.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) wait(t *testing.T, n int) []*core.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]*core.Message(nil), r.msgs...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d deliveries, want %d", len(got), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func history(t *testing.T, bp core.Backplane, token string, since uint64) core.HistoryResult {
	t.Helper()
	h, err := bp.History(context.Background(), token, since, 0)
	if err != nil {
		t.Fatalf("history: %v", err)
	}
	return h
}

func seqIncreases(t *testing.T, bp core.Backplane) {
	a, b := newToken(t), newToken(t)
	var last uint64
	for i := 0; i < 20; i++ {
		m := msg(a, "h5", i)
		res := publish(t, bp, m)
		if m.Seq <= last || res.Seq != m.Seq || res.Duplicate {
			t.Fatalf("publish %d: seq %d after %d (result %+v)", i, m.Seq, last, res)
		}
		last = m.Seq
		publish(t, bp, msg(b, "h5", i)) // another token does not disturb a's order
	}
	if h := history(t, bp, a, 0); h.Last != last {
		t.Fatalf("history last = %d, want %d", h.Last, last)
	}
}

func subscribersSeeOrder(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	r1, r2 := &recorder{}, &recorder{}
	defer bp.Subscribe(token, r1)()
	defer bp.Subscribe(token, r2)()
	other := &recorder{}
	defer bp.Subscribe(newToken(t), other)()
	for i := 0; i < 50; i++ {
		publish(t, bp, msg(token, "h5", i))
	}
	for _, r := range []*recorder{r1, r2} {
		got := r.wait(t, 50)
		for i, m := range got {
			if string(m.Data) != fmt.Sprint(i) || (i > 0 && m.Seq <= got[i-1].Seq) {
				t.Fatalf("delivery %d: data %s seq %d", i, m.Data, m.Seq)
			}
			if m.Token != token || m.From != "h5" || m.Type != "t" {
				t.Fatalf("delivery %d lost fields: %+v", i, m)
			}
		}
	}
	time.Sleep(50 * time.Millisecond)
	if len(other.msgs) != 0 {
		t.Fatalf("another token's subscriber got %d messages", len(other.msgs))
	}
}

func concurrentOrder(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	r := &recorder{}
	defer bp.Subscribe(token, r)()
	const senders, each = 4, 100
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func(from string) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := bp.Publish(context.Background(), []*core.Message{msg(token, from, i)}); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}(fmt.Sprint("env", s))
	}
	wg.Wait()
	got := r.wait(t, senders*each)
	next := map[string]int{}
	for i, m := range got {
		if i > 0 && m.Seq <= got[i-1].Seq {
			t.Fatalf("delivery %d: seq %d not above %d", i, m.Seq, got[i-1].Seq)
		}
		if string(m.Data) != fmt.Sprint(next[m.From]) {
			t.Fatalf("sender %s: got %s, want %d (per-sender order)", m.From, m.Data, next[m.From])
		}
		next[m.From]++
	}
}

func unsubscribe(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	r := &recorder{}
	cancel := bp.Subscribe(token, r)
	publish(t, bp, msg(token, "h5", 1))
	r.wait(t, 1)
	cancel()
	publish(t, bp, msg(token, "h5", 2))
	time.Sleep(50 * time.Millisecond)
	if n := len(r.wait(t, 1)); n != 1 {
		t.Fatalf("got %d deliveries after unsubscribe", n)
	}
}

// historyPages reads the history a page at a time, as a resume does: each
// page continues where the last ended, and every page knows the newest seq.
func historyPages(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	var seqs []uint64
	for i := 0; i < 10; i++ {
		m := msg(token, "h5", i)
		publish(t, bp, m)
		seqs = append(seqs, m.Seq)
	}
	since := seqs[0]
	var got []int
	for pages := 0; since < seqs[9]; pages++ {
		if pages > 4 {
			t.Fatalf("pages of 3 after seq[0] do not reach the end: %v", got)
		}
		h, err := bp.History(context.Background(), token, since, 3)
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		if !h.Complete || h.Last != seqs[9] || len(h.Messages) == 0 || len(h.Messages) > 3 {
			t.Fatalf("page after %d: complete %v last %d, %d messages", since, h.Complete, h.Last, len(h.Messages))
		}
		for _, m := range h.Messages {
			var n int
			_ = json.Unmarshal(m.Data, &n)
			got = append(got, n)
			since = m.Seq
		}
	}
	if fmt.Sprint(got) != "[1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("pages gave %v", got)
	}
	if h, _ := bp.History(context.Background(), token, seqs[9], 3); !h.Complete || len(h.Messages) != 0 {
		t.Fatalf("page after the newest seq: complete %v, %d messages", h.Complete, len(h.Messages))
	}
}

func historySince(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	var seqs []uint64
	for i := 0; i < 10; i++ {
		m := msg(token, "h5", i)
		if i%2 == 1 {
			m.To = []string{"pc"}
		}
		publish(t, bp, m)
		seqs = append(seqs, m.Seq)
	}
	h := history(t, bp, token, seqs[3])
	if !h.Complete || h.Last != seqs[9] || len(h.Messages) != 6 {
		t.Fatalf("since seq[3]: complete %v last %d, %d messages", h.Complete, h.Last, len(h.Messages))
	}
	for i, m := range h.Messages {
		if m.Seq != seqs[4+i] || string(m.Data) != fmt.Sprint(4+i) {
			t.Fatalf("history[%d] = seq %d data %s", i, m.Seq, m.Data)
		}
		if i%2 == 1 && (len(m.To) != 1 || m.To[0] != "pc") {
			t.Fatalf("history[%d] lost its to: %v", i, m.To)
		}
	}
	if all := history(t, bp, token, 0); !all.Complete || len(all.Messages) != 10 {
		t.Fatalf("since 0: complete %v, %d messages", all.Complete, len(all.Messages))
	}
	if now := history(t, bp, token, seqs[9]); !now.Complete || len(now.Messages) != 0 {
		t.Fatalf("since last: complete %v, %d messages", now.Complete, len(now.Messages))
	}
	if future := history(t, bp, token, seqs[9]+100); future.Complete {
		t.Fatal("a seq from the future counts as resumable")
	}
	if fresh := history(t, bp, newToken(t), 12345); fresh.Complete {
		t.Fatal("a seq of a token with no history counts as resumable")
	}
}

func historyWindow(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	var seqs []uint64
	for i := 0; i < 12; i++ {
		m := msg(token, "h5", i)
		publish(t, bp, m)
		seqs = append(seqs, m.Seq)
	}
	// Size 5 keeps seqs[7..11]: resuming after seqs[6] still works,
	// after seqs[5] a message is gone.
	if h := history(t, bp, token, seqs[6]); !h.Complete || len(h.Messages) != 5 {
		t.Fatalf("since seqs[6]: complete %v, %d messages", h.Complete, len(h.Messages))
	}
	if h := history(t, bp, token, seqs[5]); h.Complete {
		t.Fatalf("since seqs[5]: reported complete with %d messages though seqs[6] was evicted", len(h.Messages))
	}
	if h := history(t, bp, token, 0); h.Complete || len(h.Messages) != 5 {
		t.Fatalf("since 0 after evictions: complete %v, %d messages; want incomplete, 5", h.Complete, len(h.Messages))
	}
}

// tokenBytes is the per-token byte bound HistoryWindowByTokenBytes sets:
// 8 messages of 2,000 bytes fit with either backplane's overhead, 20 do not.
const tokenBytes = 20 << 10

func bigMsg(token string, n, size int) *core.Message {
	m := msg(token, "h5", n)
	m.Data = json.RawMessage(`"` + strings.Repeat("x", size-3) + fmt.Sprint(n%10) + `"`)
	return m
}

// historyTokenBytes: one token's history stays within max_token_bytes,
// oldest messages first, and a resume from before a dropped one is not
// complete; another token's history is not touched, and the newest
// message stays even when it alone is over the bound.
func historyTokenBytes(t *testing.T, bp core.Backplane) {
	big, small := newToken(t), newToken(t)
	var smallSeqs []uint64
	for i := 0; i < 10; i++ {
		m := msg(small, "h5", i)
		publish(t, bp, m)
		smallSeqs = append(smallSeqs, m.Seq)
	}
	var seqs []uint64
	for i := 0; i < 20; i++ {
		m := bigMsg(big, i, 2000)
		publish(t, bp, m)
		seqs = append(seqs, m.Seq)
	}
	h := history(t, bp, big, seqs[0])
	if h.Complete {
		t.Fatalf("since the first of 20 messages of 2,000 bytes under a bound of %d bytes: reported complete with %d messages", tokenBytes, len(h.Messages))
	}
	n := len(h.Messages)
	if n < 8 || n >= 11 || h.Messages[n-1].Seq != seqs[19] {
		t.Fatalf("kept %d messages (want the newest 8 to 10 of 20 within %d bytes), last seq %d, want %d", n, tokenBytes, h.Messages[n-1].Seq, seqs[19])
	}
	for i, m := range h.Messages {
		if want := seqs[20-n+i]; m.Seq != want || len(m.Data) != 2000 {
			t.Fatalf("message %d of the history: seq %d (want %d), %d bytes of data", i, m.Seq, want, len(m.Data))
		}
	}
	// Resuming from just before the oldest message kept still works.
	if h := history(t, bp, big, seqs[20-n]-1); !h.Complete || len(h.Messages) != n {
		t.Fatalf("since the last dropped message: complete %v, %d messages; want complete, %d", h.Complete, len(h.Messages), n)
	}
	if h := history(t, bp, small, smallSeqs[0]-1); !h.Complete || len(h.Messages) != 10 {
		t.Fatalf("the other token: complete %v, %d messages; want complete, 10", h.Complete, len(h.Messages))
	}
	// A message over the bound by itself replaces everything before it.
	huge := bigMsg(big, 99, 2*tokenBytes)
	publish(t, bp, huge)
	if h := history(t, bp, big, seqs[19]); !h.Complete || len(h.Messages) != 1 || h.Messages[0].Seq != huge.Seq {
		t.Fatalf("after a message over the bound: complete %v, %d messages; want complete, only it", h.Complete, len(h.Messages))
	}
	if h := history(t, bp, big, seqs[19]-1); h.Complete {
		t.Fatal("after a message over the bound: a resume from before the message before it reported complete")
	}
}

func historyAge(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	// A token someone holds keeps its seq range even when its messages expire.
	defer bp.Subscribe(token, &recorder{})()
	first := msg(token, "h5", 1)
	publish(t, bp, first)
	time.Sleep(600 * time.Millisecond)
	second := msg(token, "h5", 2)
	publish(t, bp, second)
	h := history(t, bp, token, first.Seq-1)
	if h.Complete {
		t.Fatal("resume across an expired message reported complete")
	}
	if h := history(t, bp, token, first.Seq); !h.Complete || len(h.Messages) != 1 || h.Messages[0].Seq != second.Seq {
		t.Fatalf("since first: complete %v, %d messages", h.Complete, len(h.Messages))
	}
}

func batch(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	r := &recorder{}
	defer bp.Subscribe(token, r)()
	a, b, c := msg(token, "h5", 1), msg(token, "h5", 2), msg(token, "h5", 3)
	res := publish(t, bp, a, b, c)
	if b.Seq != a.Seq+1 || c.Seq != b.Seq+1 || res.Seq != c.Seq {
		t.Fatalf("batch seqs %d %d %d, result %d", a.Seq, b.Seq, c.Seq, res.Seq)
	}
	r.wait(t, 3)
	if res := publish(t, bp); res.Seq != 0 || res.Duplicate {
		t.Fatalf("empty batch: %+v", res)
	}
}

func dedupe(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	r := &recorder{}
	defer bp.Subscribe(token, r)()
	first := msg(token, "h5", 1)
	first.ID = "c-1"
	res := publish(t, bp, first)
	repeat := msg(token, "h5", 1)
	repeat.ID = "c-1"
	again := publish(t, bp, repeat)
	if !again.Duplicate || again.Seq != res.Seq {
		t.Fatalf("repeat: %+v, want duplicate of %d", again, res.Seq)
	}
	if seq, ok, err := bp.Seen(context.Background(), token, "h5", "c-1"); err != nil || !ok || seq != res.Seq {
		t.Fatalf("Seen = %d %v %v", seq, ok, err)
	}
	// The same id from another env, or another token, is another message.
	other := msg(token, "miniapp", 1)
	other.ID = "c-1"
	if res := publish(t, bp, other); res.Duplicate {
		t.Fatal("same id from another env counted as duplicate")
	}
	if _, ok, _ := bp.Seen(context.Background(), newToken(t), "h5", "c-1"); ok {
		t.Fatal("id seen on a token that never had it")
	}
	time.Sleep(30 * time.Millisecond)
	if n := len(r.wait(t, 2)); n != 2 {
		t.Fatalf("subscriber got %d messages, want 2 (the repeat is not delivered)", n)
	}
}

func dedupeWindow(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	first := msg(token, "h5", 0)
	first.ID = "old"
	publish(t, bp, first)
	for i := 1; i <= 3; i++ {
		publish(t, bp, msg(token, "h5", i))
	}
	// "old" left the window (size 3): a repeat is a new message now.
	repeat := msg(token, "h5", 0)
	repeat.ID = "old"
	if res := publish(t, bp, repeat); res.Duplicate {
		t.Fatal("an id outside the window still deduplicated")
	}
}

func historyOff(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	r := &recorder{}
	defer bp.Subscribe(token, r)()
	m := msg(token, "h5", 1)
	m.ID = "x"
	publish(t, bp, m)
	r.wait(t, 1)
	h := history(t, bp, token, m.Seq-1)
	if h.Complete || len(h.Messages) != 0 || h.Last != m.Seq {
		t.Fatalf("history off: %+v", h)
	}
	if h := history(t, bp, token, m.Seq); !h.Complete {
		t.Fatal("resuming at the newest seq needs no history and is complete")
	}
}

func join(t *testing.T, bp core.Backplane, req core.JoinRequest) core.JoinResult {
	t.Helper()
	res, err := bp.Join(context.Background(), req)
	if err != nil {
		t.Fatalf("join %+v: %v", req, err)
	}
	return res
}

func (r *recorder) waitEvents(t *testing.T, n int) []core.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]core.Event(nil), r.events...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d events, want %d: %+v", len(got), n, got)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func joinLeave(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	r := &recorder{}
	defer bp.Subscribe(token, r)()
	if res := join(t, bp, core.JoinRequest{Token: token, Env: "h5", Session: "s1"}); len(res.Peers) != 0 || res.Replaced != "" {
		t.Fatalf("first join: %+v", res)
	}
	res := join(t, bp, core.JoinRequest{Token: token, Env: "miniapp", Session: "s2"})
	if len(res.Peers) != 1 || res.Peers[0] != "h5" {
		t.Fatalf("second join peers %v", res.Peers)
	}
	// Newest wins: s3 takes h5 over from s1.
	if res := join(t, bp, core.JoinRequest{Token: token, Env: "h5", Session: "s3"}); res.Replaced != "s1" {
		t.Fatalf("replacing join: %+v", res)
	}
	// The replaced session leaving changes nothing; the owner leaving does.
	if err := bp.Leave(context.Background(), token, "h5", "s1"); err != nil {
		t.Fatal(err)
	}
	if err := bp.Leave(context.Background(), token, "miniapp", "s2"); err != nil {
		t.Fatal(err)
	}
	want := []core.Event{
		{Kind: core.EventJoin, Env: "h5", Session: "s1"},
		{Kind: core.EventJoin, Env: "miniapp", Session: "s2"},
		{Kind: core.EventJoin, Env: "h5", Session: "s3", Replaced: true},
		{Kind: core.EventLeave, Env: "miniapp", Session: "s2"},
	}
	r.waitEvents(t, len(want))
	time.Sleep(50 * time.Millisecond) // nothing more may follow
	got := r.waitEvents(t, len(want))
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %+v", got, want)
	}
	// Claims are ordered: each join's epoch is above the one before.
	for i := 1; i < 3; i++ {
		if got[i].Epoch <= got[i-1].Epoch {
			t.Fatalf("join epochs not increasing: %+v", got[:3])
		}
	}
	for i := range want {
		got[i].Epoch = 0
		if got[i] != want[i] {
			t.Fatalf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if res := join(t, bp, core.JoinRequest{Token: token, Env: "pc", Session: "s4"}); len(res.Peers) != 1 || res.Peers[0] != "h5" {
		t.Fatalf("peers after leave: %v", res.Peers)
	}
}

func joinPolicies(t *testing.T, bp core.Backplane) {
	token := newToken(t)
	join(t, bp, core.JoinRequest{Token: token, Env: "h5", Session: "a", MaxEnvs: 2})
	if _, err := bp.Join(context.Background(), core.JoinRequest{Token: token, Env: "h5", Session: "b", Reject: true}); err != core.ErrEnvTaken {
		t.Fatalf("reject policy: %v", err)
	}
	join(t, bp, core.JoinRequest{Token: token, Env: "miniapp", Session: "c", MaxEnvs: 2})
	if _, err := bp.Join(context.Background(), core.JoinRequest{Token: token, Env: "pc", Session: "d", MaxEnvs: 2}); err != core.ErrTokenFull {
		t.Fatalf("third env with MaxEnvs 2: %v", err)
	}
	// Replacing an env that is online is no extra env.
	if res := join(t, bp, core.JoinRequest{Token: token, Env: "miniapp", Session: "e", MaxEnvs: 2}); res.Replaced != "c" {
		t.Fatalf("replacement under the cap: %+v", res)
	}
}

// publishBatches checks that one PublishBatches call is the same as one
// Publish per batch in order, a repeat of an id earlier in the call
// included.
func publishBatches(t *testing.T, bp core.Backplane) {
	bb, ok := bp.(core.BatchPublisher)
	if !ok {
		return
	}
	token := newToken(t)
	r := &recorder{}
	defer bp.Subscribe(token, r)()
	withID := func(n int, id string) *core.Message {
		m := msg(token, "h5", n)
		m.ID = id
		return m
	}
	a, repeat := withID(1, "x"), withID(2, "x")
	fan1, fan2 := withID(3, "y"), withID(4, "y")
	plain := msg(token, "h5", 5)
	fromOther := msg(token, "miniapp", 6)
	fromOther.ID = "x"
	batches := [][]*core.Message{{a}, {repeat}, {fan1, fan2}, {}, {plain}, {withID(7, "x")}, {fromOther}}
	results := make([]core.BatchResult, len(batches))
	bb.PublishBatches(context.Background(), batches, results)
	for i, res := range results {
		if res.Err != nil {
			t.Fatalf("batch %d: %v", i, res.Err)
		}
	}
	s := a.Seq
	want := []core.PublishResult{{Seq: s}, {Seq: s, Duplicate: true}, {Seq: s + 2}, {}, {Seq: s + 3},
		{Seq: s, Duplicate: true}, {Seq: s + 4}}
	for i := range want {
		if results[i].PublishResult != want[i] {
			t.Errorf("batch %d: %+v, want %+v", i, results[i].PublishResult, want[i])
		}
	}
	if fan1.Seq != s+1 || fan2.Seq != s+2 || plain.Seq != s+3 || fromOther.Seq != s+4 {
		t.Errorf("seqs %d %d %d %d, want %d..%d", fan1.Seq, fan2.Seq, plain.Seq, fromOther.Seq, s+1, s+4)
	}
	got := r.wait(t, 5)
	for i, m := range got {
		if m.Seq != s+uint64(i) {
			t.Fatalf("delivery %d has seq %d, want %d (repeats are not delivered)", i, m.Seq, s+uint64(i))
		}
	}
	if seq, ok, err := bp.Seen(context.Background(), token, "h5", "y"); err != nil || !ok || seq != s+2 {
		t.Fatalf("Seen(y) = %d %v %v, want %d", seq, ok, err, s+2)
	}
	if res := publish(t, bp, withID(8, "y")); !res.Duplicate || res.Seq != s+2 {
		t.Fatalf("a later repeat of y: %+v, want a duplicate of %d", res, s+2)
	}
	if h := history(t, bp, token, s-1); len(h.Messages) != 5 || h.Last != s+4 {
		t.Fatalf("history after the call: %d messages, last %d; want 5, %d", len(h.Messages), h.Last, s+4)
	}
	time.Sleep(30 * time.Millisecond)
	if n := len(r.wait(t, 5)); n != 5 {
		t.Fatalf("subscriber got %d messages, want 5", n)
	}
}
