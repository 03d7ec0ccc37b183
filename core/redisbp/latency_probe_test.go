package redisbp_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

type stamp struct {
	mu  sync.Mutex
	got map[uint64]time.Time
}

func (s *stamp) Deliver(m *core.Message) { s.mu.Lock(); s.got[m.Seq] = time.Now(); s.mu.Unlock() }
func (s *stamp) Event(core.Event)        {}

// BenchmarkBackplaneLatencyProbe measures once, whatever b.N is: run it with
// go test -run '^$' -bench BackplaneLatencyProbe -benchtime 1x ./core/redisbp/
func BenchmarkBackplaneLatencyProbe(bench *testing.B) {
	if bench.N > 1 {
		bench.Skip("one measurement is enough: use -benchtime 1x")
	}
	var t testing.TB = bench
	srv := redistest.Start(t)
	prefix := newPrefix(t)
	a := open(t, srv, prefix, redisbp.Options{History: history()})
	b := open(t, srv, prefix, redisbp.Options{History: history()})
	st := &stamp{got: map[uint64]time.Time{}}
	defer b.Subscribe("tok", st)()
	live(t, b, "tok")
	var pub, seen, e2e []time.Duration
	sent := map[uint64]time.Time{}
	for i := 0; i < 5000; i++ {
		m := msg("tok", "h5", i)
		m.ID = "x" + time.Now().String()
		s := time.Now()
		if _, _, err := a.Seen(context.Background(), "tok", "h5", m.ID); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, time.Since(s))
		s2 := time.Now()
		publish(t, a, m)
		pub = append(pub, time.Since(s2))
		sent[m.Seq] = s
		time.Sleep(200 * time.Microsecond)
	}
	time.Sleep(100 * time.Millisecond)
	st.mu.Lock()
	for seq, at := range st.got {
		e2e = append(e2e, at.Sub(sent[seq]))
	}
	st.mu.Unlock()
	for name, d := range map[string][]time.Duration{"seen": seen, "publish": pub, "seen+publish+deliver": e2e} {
		slices.Sort(d)
		t.Logf("%-22s p50 %v p99 %v", name, d[len(d)/2], d[len(d)*99/100])
	}
}
