package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/pairrelay/relay/api"
	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// startAPI serves the server API when api.keys is set: mounted on the
// relay's listener, or on api.listen's own (returned, for the caller to
// shut down). Nothing serves /api/v1 when the API is off.
func startAPI(cfg *config.Config, srv *core.Server, log *slog.Logger) (*http.Server, error) {
	if !cfg.API.Enabled() {
		return nil, nil
	}
	h := api.New(srv.API(), cfg.API, log)
	if cfg.API.Listen == "" {
		srv.Mount(api.Prefix, h)
		log.Info("server API on the relay's listener", "path", api.Prefix, "keys", len(cfg.API.Keys))
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return nil, fmt.Errorf("api.listen %s: %w", cfg.API.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle(api.Prefix+"/", h)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}
	go func() { _ = hs.Serve(ln) }()
	log.Info("server API listening", "addr", ln.Addr().String(), "path", api.Prefix, "keys", len(cfg.API.Keys))
	return hs, nil
}
