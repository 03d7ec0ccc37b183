package core_test

import (
	"context"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/backplanetest"
)

func TestMemoryBackplaneConformance(t *testing.T) {
	backplanetest.Run(t, func(t *testing.T, opts config.History) core.Backplane {
		return core.NewMemoryBackplane(opts)
	})
}

func TestMemoryBackplaneForgetsIdleTokensPastTheCap(t *testing.T) {
	bp := core.NewMemoryBackplane(config.History{Size: 10, TTL: time.Minute, MaxTokens: 64, MaxBytes: 1 << 20})
	defer bp.Close()
	// One token per shard at most: publishing to 1,000 tokens keeps ≤ 64.
	for i := 0; i < 1000; i++ {
		m := &core.Message{Type: "t", Token: string(rune('a'+i%26)) + time.Now().String() + string(rune(i)), From: "h5"}
		if _, err := bp.Publish(context.Background(), []*core.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	st := bp.Stats()
	if st.Tokens > 64 || st.Evictions < 1000-64 {
		t.Fatalf("stats %+v: want at most 64 tokens and the rest evicted", st)
	}
}

func TestMemoryBackplaneBytesStayUnderCap(t *testing.T) {
	bp := core.NewMemoryBackplane(config.History{Size: 1000, TTL: time.Minute, MaxTokens: 100, MaxBytes: 64 << 10})
	defer bp.Close()
	data := make([]byte, 1000)
	for i := range data {
		data[i] = 'x'
	}
	for i := 0; i < 500; i++ {
		m := &core.Message{Type: "t", Data: append([]byte(`"`), append(data, '"')...), Token: "one", From: "h5"}
		if _, err := bp.Publish(context.Background(), []*core.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	if st := bp.Stats(); st.Bytes > 64<<10 {
		t.Fatalf("history holds %d bytes, cap 64 KiB", st.Bytes)
	}
}
