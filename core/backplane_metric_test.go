package core

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pairrelay/relay/config"
)

// readyBackplane is a backplane whose reachability the test sets, as a
// Redis backplane's health check would.
type readyBackplane struct {
	Backplane
	up atomic.Bool
}

func (b *readyBackplane) Ready() bool { return b.up.Load() }

// TestBackplaneUpMetric: relay_backplane_up follows the backplane's health,
// the signal /readyz answers on, and is 1 for the in-process backplane.
func TestBackplaneUpMetric(t *testing.T) {
	cfg := config.Default()
	value := func(srv *Server) float64 {
		t.Helper()
		families, err := srv.Metrics().Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "relay_backplane_up" {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("relay_backplane_up is not exported")
		return 0
	}
	start := func(bp Backplane) *Server {
		srv := NewServer(cfg, slog.New(slog.DiscardHandler), bp)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			_ = bp.Close()
		})
		return srv
	}
	if v := value(start(NewMemoryBackplane(cfg.History))); v != 1 {
		t.Errorf("memory backplane: relay_backplane_up = %v, want 1", v)
	}
	rb := &readyBackplane{Backplane: NewMemoryBackplane(cfg.History)}
	srv := start(rb)
	if v := value(srv); v != 0 {
		t.Errorf("unreachable backplane: relay_backplane_up = %v, want 0", v)
	}
	rb.up.Store(true)
	if v := value(srv); v != 1 {
		t.Errorf("reachable again: relay_backplane_up = %v, want 1", v)
	}
}
