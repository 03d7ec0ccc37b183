package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// watchInterval is how often the config file's modification time is checked.
const watchInterval = time.Second

// reloader rebuilds the pipeline when relay.yaml changes or on SIGHUP. A
// valid new config replaces the routes atomically, with every connection
// kept; an invalid one is refused and the running pipeline stays.
type reloader struct {
	path    string
	current *config.Config
	log     *slog.Logger
	srv     *core.Server
}

func (r *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	lastMod := modTime(r.path)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload(ctx, "SIGHUP")
			lastMod = modTime(r.path)
		case <-tick.C:
			if mod := modTime(r.path); !mod.Equal(lastMod) {
				lastMod = mod
				r.reload(ctx, "file changed")
			}
		}
	}
}

func modTime(path string) time.Time {
	info, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return info.ModTime()
}

func (r *reloader) reload(ctx context.Context, why string) {
	cfg, _, err := loadConfig(ctx, r.path, true)
	if err != nil {
		r.log.Error("config reload refused; the running routes stay", "why", why, "err", err.Error())
		return
	}
	resolveTraceProject(cfg)
	pipeline, err := buildPipeline(ctx, cfg, r.path, r.log, r.srv.Metrics())
	if err != nil {
		r.log.Error("config reload refused; the running routes stay", "why", why, "err", err.Error())
		return
	}
	old := r.srv.Hub().SetPipeline(pipeline)
	// Messages already inside the old pipeline finish there.
	go old.Retire()
	if changed := restartOnly(r.current, cfg); len(changed) > 0 {
		r.log.Warn("config reloaded, but these settings take effect only after a restart", "keys", changed)
	}
	r.current = cfg
	r.log.Info("config reloaded", "why", why, "routes", len(cfg.Routes))
}

// restartOnly lists the top-level keys that changed and that a reload does
// not apply (routes, unmatched and plugins are part of the pipeline and are
// reloaded).
func restartOnly(old, cur *config.Config) []string {
	var changed []string
	ov, cv := reflect.ValueOf(old).Elem(), reflect.ValueOf(cur).Elem()
	for i := 0; i < ov.NumField(); i++ {
		field := ov.Type().Field(i)
		key := field.Tag.Get("yaml")
		if key == "routes" || key == "unmatched" || key == "plugins" {
			continue
		}
		if !reflect.DeepEqual(ov.Field(i).Interface(), cv.Field(i).Interface()) {
			changed = append(changed, key)
		}
	}
	return changed
}
