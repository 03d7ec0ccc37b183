package main

import (
	"context"
	"log/slog"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/core/redisbp"
)

// newBackplane builds the backplane relay.yaml asks for: the in-process
// memory one (a single instance), or Redis (several instances behave as
// one). A Redis backplane fails here when Redis cannot be reached, so that
// serve fails instead of running alone. The Redis one has Ready() bool
// for /readyz.
func newBackplane(ctx context.Context, cfg *config.Config, budget core.MemoryBudget, log *slog.Logger) (core.Backplane, error) {
	if cfg.Backplane.Type != config.BackplaneRedis {
		// The history held in this process is part of its memory budget.
		hist := cfg.History
		hist.MaxBytes = budget.HistoryBytes(hist.MaxBytes)
		return core.NewMemoryBackplane(hist), nil
	}
	bp, err := redisbp.New(ctx, cfg.Backplane, redisbp.Options{History: cfg.History, Log: log})
	if err != nil {
		return nil, err
	}
	log.Info("redis backplane connected", "prefix", cfg.Backplane.Prefix, "instance", bp.Instance())
	return bp, nil
}
