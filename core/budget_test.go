package core

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
)

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		proc   string
		files  map[string]string
		want   int64
		errors bool
	}{
		{name: "v1 own group", proc: "12:memory:/pod/relay\n3:cpu,cpuacct:/pod/relay\n",
			files: map[string]string{"memory/pod/relay/memory.limit_in_bytes": "536870912\n"}, want: 512 << 20},
		{name: "v1 unlimited group", proc: "4:memory:/a\n",
			files: map[string]string{"memory/a/memory.limit_in_bytes": "9223372036854771712\n"}, want: 0},
		{name: "v1 bound by an ancestor", proc: "4:memory:/a/b\n",
			files: map[string]string{
				"memory/a/b/memory.limit_in_bytes": "9223372036854771712\n",
				"memory/a/b/memory.stat":           "cache 0\nhierarchical_memory_limit 268435456\nrss 1\n",
			}, want: 256 << 20},
		{name: "v1 group mounted as the root (container)", proc: "4:memory:/docker/abc\n",
			files: map[string]string{"memory/memory.limit_in_bytes": "1073741824"}, want: 1 << 30},
		{name: "v2", proc: "0::/user.slice/relay.service\n",
			files: map[string]string{"user.slice/relay.service/memory.max": "536870912\n"}, want: 512 << 20},
		{name: "v2 max", proc: "0::/x\n", files: map[string]string{"x/memory.max": "max\n"}, want: 0},
		{name: "v2 namespaced root", proc: "0::/\n", files: map[string]string{"memory.max": "1048576000\n"}, want: 1048576000},
		{name: "no memory line", proc: "3:cpu:/x\n", errors: true},
		{name: "garbage", proc: "0::/x\n", files: map[string]string{"x/memory.max": "lots\n"}, errors: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			proc := filepath.Join(dir, "cgroup")
			if err := os.WriteFile(proc, []byte(tc.proc), 0o644); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(dir, "sys")
			for name, content := range tc.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, _, err := cgroupMemoryLimit(proc, root)
			if (err != nil) != tc.errors {
				t.Fatalf("err = %v, want error: %v", err, tc.errors)
			}
			if got != tc.want {
				t.Fatalf("limit = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestResolveMemoryBudget(t *testing.T) {
	if b := ResolveMemoryBudget(400 << 20); b.Limit != 400<<20 || b.QueueBytes() != 100<<20 || b.HistoryBytes(256<<20) != 200<<20 {
		t.Fatalf("set budget: %+v queue %d history %d", b, b.QueueBytes(), b.HistoryBytes(256<<20))
	}
	if b := ResolveMemoryBudget(-1); b.Limit != 0 || b.QueueBytes() != 0 || b.HistoryBytes(256<<20) != 256<<20 {
		t.Fatalf("budget turned off: %+v", b)
	}
	if b := ResolveMemoryBudget(1 << 30); b.HistoryBytes(64<<20) != 64<<20 {
		t.Fatalf("history.max_bytes below half the budget must win: %d", b.HistoryBytes(64<<20))
	}
}

// A realistic fill of the history: v1 messages (data copied out of the
// read buffer) and seed messages (the text, and for a routed one its
// parsed data too), with and without client ids, must be counted at what
// the heap really grows by.
func TestHistoryBytesMatchTheHeap(t *testing.T) {
	for _, tc := range []struct {
		name             string
		tokens, messages int
		payload          int
		seed, parse, ids bool
	}{
		{name: "v1 60KB", tokens: 8, messages: 64, payload: 60_000},
		{name: "seed 60KB routed", tokens: 8, messages: 64, payload: 60_000, seed: true, parse: true},
		{name: "v1 small with ids", tokens: 50, messages: 256, payload: 200, ids: true},
		{name: "seed small", tokens: 50, messages: 256, payload: 300, seed: true},
		{name: "v1 3KB", tokens: 20, messages: 256, payload: 3000, ids: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bp := NewMemoryBackplane(config.History{Size: tc.messages, TTL: time.Hour, MaxTokens: 100000, MaxBytes: 1 << 40})
			defer bp.Close()
			text := []byte(fmt.Sprintf(`{"type":"material.add","data":{"blob":%q}}`, strings.Repeat("x", tc.payload)))
			before := liveHeap()
			for tok := 0; tok < tc.tokens; tok++ {
				token := fmt.Sprintf("token-%d-%s", tok, strings.Repeat("k", 20))
				for i := 0; i < tc.messages; i++ {
					var m *Message
					if tc.seed {
						m = newSeedMessage(append([]byte(nil), text...))
						if tc.parse {
							m.Resolve()
						}
					} else {
						m = &Message{}
						if cerr := parseV1(text, m); cerr != nil {
							t.Fatal(cerr)
						}
					}
					if tc.ids {
						m.ID = fmt.Sprintf("c-%d", i)
					}
					m.Token, m.From, m.TS = token, "h5", time.Now().UnixMilli()
					if _, err := bp.Publish(context.Background(), []*Message{m}); err != nil {
						t.Fatal(err)
					}
				}
			}
			grown := liveHeap() - before
			counted := bp.Stats().Bytes
			ratio := float64(counted) / float64(grown)
			t.Logf("heap grew %d bytes, history counts %d (ratio %.2f)", grown, counted, ratio)
			if ratio < 0.75 || ratio > 1.25 {
				t.Fatalf("history counts %d bytes but the heap grew by %d (ratio %.2f, want within ±25%%)", counted, grown, ratio)
			}
			runtime.KeepAlive(bp)
		})
	}
}

func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// Over its byte budget the history drops the history of idle tokens first
// and then the oldest messages of busy ones; a resume from before what was
// dropped is never reported complete.
func TestHistoryBudgetEvictsIdleTokensFirst(t *testing.T) {
	bp := NewMemoryBackplane(config.History{Size: 1000, TTL: time.Hour, MaxTokens: 1000, MaxBytes: 4 << 20})
	defer bp.Close()
	ctx := context.Background()
	data := []byte(`"` + strings.Repeat("d", 10_000) + `"`)
	publish := func(token string) uint64 {
		t.Helper()
		m := &Message{Type: "t", Data: append([]byte(nil), data...), Token: token, From: "h5"}
		res, err := bp.Publish(ctx, []*Message{m})
		if err != nil {
			t.Fatal(err)
		}
		return res.Seq
	}
	// A busy token: a session holds it.
	if _, err := bp.Join(ctx, JoinRequest{Token: "busy", Env: "miniapp", Session: "s1"}); err != nil {
		t.Fatal(err)
	}
	busyFirst := publish("busy")
	for i := 0; i < 99; i++ {
		publish("busy")
	}
	idleFirst := map[string]uint64{}
	for i := 0; i < 10; i++ {
		tok := fmt.Sprintf("idle-%d", i)
		idleFirst[tok] = publish(tok)
		for j := 0; j < 9; j++ {
			publish(tok)
		}
	}
	// ~2.4 MiB held; now the busy token alone pushes the total past 4 MiB.
	for i := 0; i < 200; i++ {
		publish("busy")
	}
	st := bp.Stats()
	if st.Bytes > 4<<20 {
		t.Fatalf("history holds %d bytes, budget 4 MiB", st.Bytes)
	}
	if st.Trimmed == 0 {
		t.Fatalf("nothing trimmed: %+v", st)
	}
	// The busy token's history is whole, from its first message: the idle
	// tokens paid.
	h, _ := bp.History(ctx, "busy", busyFirst-1, 0)
	if !h.Complete || len(h.Messages) != 300 {
		t.Fatalf("busy token: complete %v, %d messages; want its 300 messages intact", h.Complete, len(h.Messages))
	}
	evicted := 0
	for tok, first := range idleFirst {
		h, _ := bp.History(ctx, tok, first-1, 0)
		if len(h.Messages) < 10 {
			evicted++
			if h.Complete {
				t.Fatalf("%s: %d of 10 messages left but resume reported complete", tok, len(h.Messages))
			}
		}
	}
	if evicted == 0 {
		t.Fatal("no idle token lost history")
	}

	// Idle history gone, the busy token's oldest messages go next.
	for i := 0; i < 300; i++ {
		publish("busy")
	}
	if st := bp.Stats(); st.Bytes > 4<<20 {
		t.Fatalf("history holds %d bytes, budget 4 MiB", st.Bytes)
	}
	h, _ = bp.History(ctx, "busy", busyFirst-1, 0)
	if h.Complete || len(h.Messages) == 0 || h.Messages[len(h.Messages)-1].Seq != h.Last {
		t.Fatalf("busy token after trimming: complete %v, %d messages, newest %d of %d", h.Complete, len(h.Messages),
			h.Messages[len(h.Messages)-1].Seq, h.Last)
	}
	// From just before what is still held, the resume is complete.
	if h2, _ := bp.History(ctx, "busy", h.Messages[0].Seq-1, 0); !h2.Complete {
		t.Fatalf("resume from the oldest retained message is not complete")
	}
}

// TrimHistory (memory pressure) drops idle tokens first too.
func TestTrimHistoryUnderPressure(t *testing.T) {
	bp := NewMemoryBackplane(config.History{Size: 1000, TTL: time.Hour, MaxTokens: 1000, MaxBytes: 1 << 30})
	defer bp.Close()
	ctx := context.Background()
	if _, err := bp.Join(ctx, JoinRequest{Token: "busy", Env: "miniapp", Session: "s1"}); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"busy", "idle"} {
		for i := 0; i < 100; i++ {
			if _, err := bp.Publish(ctx, []*Message{{Type: "t", Data: []byte(`"` + strings.Repeat("d", 1000) + `"`), Token: tok, From: "h5"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := bp.Stats().Bytes
	after := bp.TrimHistory(0.6)
	if after > before*6/10 {
		t.Fatalf("trimmed to %d of %d, want at most 60%%", after, before)
	}
	if h, _ := bp.History(ctx, "busy", 0, 0); len(h.Messages) != 100 {
		t.Fatalf("busy token lost history (%d left) while an idle token had some", len(h.Messages))
	}
}

// Above the budget's high-water mark /readyz answers 503 with a status that
// says why, the metric shows the pressure, and open sessions keep working.
func TestReadyzReportsMemoryPressure(t *testing.T) {
	r := startRelay(t)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(r.http + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before: %d %s", code, body)
	}
	a, _ := r.v1("pressure", "h5")
	b, _ := r.v1("pressure", "miniapp")
	a.readType("relay.presence")
	// A budget far below what any Go process uses puts it under pressure.
	r.srv.SetMemoryBudget(MemoryBudget{Limit: 1 << 20, Source: "test"})
	eventually(t, "/readyz 503", func() bool {
		code, body := get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"memory pressure"`)
	})
	if _, body := get("/metrics"); !strings.Contains(body, "relay_memory_pressure 1") ||
		!strings.Contains(body, "relay_memory_budget_bytes 1.048576e+06") {
		t.Fatalf("metrics do not show the pressure:\n%s", grepLines(body, "relay_memory"))
	}
	a.sendJSON(map[string]any{"type": "still", "data": 1})
	b.readType("still")
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
