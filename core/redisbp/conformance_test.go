package redisbp_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/backplanetest"
	"github.com/pairrelay/relay/core/redisbp"
	"github.com/pairrelay/relay/core/redisbp/redistest"
)

var prefixes atomic.Int64

// newPrefix keeps backplanes of different tests apart on a shared Redis.
func newPrefix(t testing.TB) string {
	return fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e9, prefixes.Add(1))
}

// open returns a backplane on srv; the test closes it.
func open(t testing.TB, srv *redistest.Server, prefix string, opts redisbp.Options) *redisbp.Backplane {
	t.Helper()
	bp, err := redisbp.New(context.Background(), config.Backplane{Type: config.BackplaneRedis, URL: srv.URL(), Prefix: prefix}, opts)
	if err != nil {
		t.Fatalf("redisbp.New: %v", err)
	}
	t.Cleanup(func() { _ = bp.Close() })
	return bp
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	backplanetest.Run(t, func(t *testing.T, opts config.History) core.Backplane {
		bp, err := redisbp.New(context.Background(), config.Backplane{Type: config.BackplaneRedis, URL: srv.URL(), Prefix: newPrefix(t)},
			redisbp.Options{History: opts})
		if err != nil {
			t.Fatalf("redisbp.New: %v", err)
		}
		return bp
	})
}
