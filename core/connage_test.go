package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	fws "github.com/fasthttp/websocket"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/internal/streamtest"
)

// The wheel alone, on a clock of its own: a session fires at the last tick
// before its drawn age (never after it), not before; one taken off never
// fires; a wheel that stalled for longer than a turn fires everything due
// and nothing early.
func TestAgeWheelFiresAtTheDrawnAge(t *testing.T) {
	limits := config.Default().Limits
	limits.MaxConnectionAge, limits.MaxConnectionAgeJitter = 10*time.Second, 0.5
	w := newAgeWheel(&limits)
	if w.tick != minAgeTick || w.lower != 5*time.Second || w.spread != 5*time.Second {
		t.Fatalf("tick %v, ages [%v, %v+%v]; want 10ms ticks, ages [5s, 10s]", w.tick, w.lower, w.lower, w.spread)
	}
	// Session i draws i/99 of the spread: ages from 5 s to 10 s.
	const n = 100
	sessions := make([]*Session, n)
	ages := make([]time.Duration, n)
	born := w.start.Add(time.Second)
	w.advance(born, nil) // the wheel has been turning for a second
	for i := range sessions {
		w.draw = func(max int64) int64 { return max * int64(i) / (n - 1) }
		sessions[i] = &Session{id: strconv.Itoa(i)}
		ages[i] = w.lower + time.Duration(w.draw(int64(w.spread)+1))
		w.add(sessions[i], born)
	}
	// Every third session ends before its age.
	for i := 0; i < n; i += 3 {
		w.remove(sessions[i])
	}
	fired := map[*Session]time.Duration{}
	var due []*Session
	for at := time.Duration(0); at <= 12*time.Second; at += w.tick {
		due = w.advance(born.Add(at), due[:0])
		for _, s := range due {
			if _, again := fired[s]; again {
				t.Fatalf("session %s fired twice", s.id)
			}
			fired[s] = at
		}
	}
	for i, s := range sessions {
		at, ok := fired[s]
		switch {
		case i%3 == 0 && ok:
			t.Errorf("session %s was taken off the wheel and fired at %v", s.id, at)
		case i%3 == 0:
		case !ok:
			t.Errorf("session %s (age %v) never fired", s.id, ages[i])
		case at > ages[i] || at <= ages[i]-w.tick:
			t.Errorf("session %s (age %v) fired at %v, want within a tick before it", s.id, ages[i], at)
		}
	}

	// A stall of three turns: what was due fires at once, what is not due
	// yet waits for its tick.
	late := &Session{id: "late"}
	w.draw = func(int64) int64 { return 0 }
	now := born.Add(20 * time.Second)
	w.add(&Session{id: "stalled"}, now.Add(-6*time.Second)) // due 1 s ago
	due = w.advance(now.Add(30*time.Second), due[:0])
	if len(due) != 1 || due[0].id != "stalled" {
		t.Fatalf("after a stall fired %v, want the stalled session", due)
	}
	now = now.Add(30 * time.Second)
	w.add(late, now)
	if due = w.advance(now.Add(4900*time.Millisecond), due[:0]); len(due) != 0 {
		t.Fatalf("a session with 5 s to live fired after 4.9 s")
	}
	if due = w.advance(now.Add(5*time.Second), due[:0]); len(due) != 1 || due[0] != late {
		t.Fatalf("a session with 5 s to live did not fire at 5 s: %v", due)
	}
}

// ageClient dials a session and reports, when the relay closes it, the
// close code and how long after the dial it came.
type ageResult struct {
	code int
	age  time.Duration
	err  error
}

func awaitAgeClose(conn *fws.Conn, since time.Time) ageResult {
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			var ce *fws.CloseError
			if !errors.As(err, &ce) {
				return ageResult{err: err}
			}
			return ageResult{code: ce.Code, age: time.Since(since)}
		}
	}
}

// A session of either wire is closed with 4012 at limits.max_connection_age,
// after the messages accepted for it before.
func TestMaxConnectionAgeClosesWith4012(t *testing.T) {
	const age = 2 * time.Second
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MaxConnectionAge, c.Limits.MaxConnectionAgeJitter = age, 0
	})
	dialed := time.Now()
	h5, _ := r.v1("age", "h5")
	seed := r.dial("token=age&env=pc")
	mini, _ := r.v1("age", "miniapp")
	const n = 20
	for i := range n {
		mini.send(fmt.Sprintf(`{"type":"note","data":%d,"to":["h5"],"id":"m%d"}`, i, i))
	}
	for range n {
		mini.readType("relay.ack", "relay.presence")
	}
	acked := time.Since(dialed)

	var got []float64
	for {
		_ = h5.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, text, err := h5.conn.ReadMessage()
		var ce *fws.CloseError
		if errors.As(err, &ce) {
			if ce.Code != CloseMaxAge || ce.Text != closeReasons[CloseMaxAge] {
				t.Fatalf("v1 session closed with %d %q, want %d", ce.Code, ce.Text, CloseMaxAge)
			}
			break
		}
		if err != nil {
			t.Fatalf("v1 session ended with %v, want close %d", err, CloseMaxAge)
		}
		var m struct {
			Type string
			Data float64
		}
		if json.Unmarshal(text, &m) == nil && m.Type == "note" {
			got = append(got, m.Data)
		}
	}
	lived := time.Since(dialed)
	if lived < age-500*time.Millisecond {
		t.Fatalf("closed %v after connecting, before its age %v", lived, age)
	}
	// Accepted well before the close, every message arrives before it (a
	// slow machine that took most of the age to ack is let off).
	if acked < age/2 && len(got) != n {
		t.Fatalf("got %d of %d messages acked %v after connecting before the close", len(got), n, acked)
	}
	for i, v := range got {
		if int(v) != i {
			t.Fatalf("messages %v, want 0..%d in order", got, n-1)
		}
	}
	if res := awaitAgeClose(seed.conn, dialed); res.code != CloseMaxAge {
		t.Fatalf("seed session ended with %d (%v), want %d", res.code, res.err, CloseMaxAge)
	}
	eventually(t, "the closes counted", func() bool {
		return scrape(t, r, `relay_closes_total{code="4012"}`) == "3"
	})
}

// With max_connection_age 4s and jitter 0.5, fifty sessions opened
// together are closed over [2s, 4s], not together.
func TestMaxConnectionAgeJitterSpreadsCloses(t *testing.T) {
	const sessions = 50
	const age = 4 * time.Second
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MaxConnectionAge, c.Limits.MaxConnectionAgeJitter = age, 0.5
	})
	results := make(chan ageResult, sessions)
	var wg sync.WaitGroup
	for i := range sessions {
		c := r.dial(fmt.Sprintf("token=jitter-%d&env=h5", i))
		dialed := time.Now()
		wg.Add(1)
		go func() { defer wg.Done(); results <- awaitAgeClose(c.conn, dialed) }()
	}
	wg.Wait()
	close(results)
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for res := range results {
		if res.code != CloseMaxAge {
			t.Fatalf("a session ended with %d (%v), want %d", res.code, res.err, CloseMaxAge)
		}
		lo, hi = min(lo, res.age), max(hi, res.age)
	}
	t.Logf("%d sessions closed between %v and %v after connecting", sessions, lo.Round(time.Millisecond), hi.Round(time.Millisecond))
	// Ages are drawn from [2s, 4s]: none is closed much before 2s (300 ms
	// for the time between the relay's upgrade and the client noting it),
	// and 50 draws all within 0.5s of each other would take odds below
	// 1e-20. A late close only widens the spread.
	if lo < age/2-300*time.Millisecond {
		t.Errorf("a session was closed %v after connecting, before the shortest age %v", lo, age/2)
	}
	if hi-lo < 500*time.Millisecond {
		t.Errorf("the closes spread over %v only, want the jitter to spread them over more than 500ms", hi-lo)
	}
}

// An age of 2 s under chaos traffic: two v1 clients exchange a stream
// while the relay closes their connections at their age (and the network
// cuts them now and then); reconnecting at once with since, nothing is
// lost, repeated or reordered.
func TestChaosMaxConnectionAgeLosesNothing(t *testing.T) {
	const total = 20000
	r := startRelay(t, func(c *config.Config) {
		c.Limits.MessagesPerSecond = 0
		c.History.Size = 20000
		c.Limits.MaxConnectionAge, c.Limits.MaxConnectionAgeJitter = 2*time.Second, 0.25
	})
	urls := []string{r.url}
	h5 := streamtest.NewStreamClient(t, urls, 0, "chaos-age", "h5", total)
	mini := streamtest.NewStreamClient(t, urls, 0, "chaos-age", "miniapp", total)
	// At most 2,500 messages a second each way: the exchange takes at
	// least 8 s, several ages.
	h5.Pace, mini.Pace = 2*time.Millisecond, 2*time.Millisecond
	// Cuts come less often than ages: a connection opened after a cut
	// always lives to its age (at most 2 s), others may be cut before it.
	stopCutting := streamtest.CutAtRandom([]*streamtest.StreamClient{h5, mini}, 2500*time.Millisecond, 6*time.Second)
	streamtest.Exchange(t, h5, mini, total, 120*time.Second, func() {})
	stopCutting()
	for _, c := range []*streamtest.StreamClient{h5, mini} {
		t.Logf("%s: %d connections, %d closed at their age", c.Env(), c.Sessions(), c.Closes(CloseMaxAge))
		if c.Closes(CloseMaxAge) < 2 {
			t.Errorf("%s: %d connections closed at their age, want at least 2", c.Env(), c.Closes(CloseMaxAge))
		}
	}
}
