package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/pairrelay/relay/auth"
	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	_ "github.com/pairrelay/relay/handlers" // registers the built-in handlers
	_ "github.com/pairrelay/relay/plugins"  // registers the plugin handler
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func versionString() string {
	if version != "dev" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return version
}

var serveCommand = &command{
	name:     "serve",
	synopsis: "[-c FILE]",
	summary:  "run the relay (on built-in defaults when there is no relay.yaml)",
	about: "Runs the relay with the config file FILE (default relay.yaml in the working directory).\n" +
		"A FILE named with -c must exist; without -c and without relay.yaml, relay says so and runs on\n" +
		"built-in defaults (seed wire, any env, any Origin, no routes). Changes to the file are applied\n" +
		"without a restart where they can be (routes, plugins); SIGTERM or SIGINT shut it down gracefully.",
	setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
		cf := configFlag(fs)
		return func(ctx context.Context, args []string) error {
			path, explicit, err := cf.resolve(fs, args)
			if err != nil {
				return err
			}
			return serve(ctx, path, explicit, out.stderr)
		}
	},
}

var checkCommand = &command{
	name:     "check",
	synopsis: "[-c FILE]",
	summary:  "validate a config file, provision its handlers, list every problem",
	about: "Reads FILE (default relay.yaml in the working directory), builds everything relay serve\n" +
		"would build without serving (schemas, expressions, plugins, auth keys) and lists every problem\n" +
		"at once with its line. Exits 1 when there is a problem or when there is no file to check.",
	setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
		cf := configFlag(fs)
		return func(ctx context.Context, args []string) error {
			path, explicit, err := cf.resolve(fs, args)
			if err != nil {
				return err
			}
			return check(ctx, path, explicit, out.stdout)
		}
	},
}

// configFileFlag is "-c FILE", or a lone FILE argument instead.
type configFileFlag struct{ path *string }

func configFlag(fs *flag.FlagSet) configFileFlag {
	return configFileFlag{fs.String("c", "relay.yaml", "config `FILE`; a lone FILE argument works too")}
}

// resolve returns the config file and whether the user named it
// explicitly (then it must exist).
func (c configFileFlag) resolve(fs *flag.FlagSet, args []string) (path string, explicit bool, err error) {
	path = *c.path
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "c" })
	switch len(args) {
	case 0:
	case 1:
		if explicit {
			return "", false, usageErr(fmt.Sprintf("%s: -c %s and %s: one config file at most", fs.Name(), path, args[0]))
		}
		path, explicit = args[0], true
	default:
		return "", false, usageErr(fmt.Sprintf("%s: one config file at most, got %q", fs.Name(), args))
	}
	return path, explicit, nil
}

func check(ctx context.Context, path string, explicit bool, stdout io.Writer) error {
	cfg, source, err := loadConfig(ctx, path, explicit)
	if err != nil {
		return err
	}
	if source == builtInDefaults {
		// "ok" about a file that is not there would pass a CI step that
		// checks nothing.
		return fmt.Errorf("check: no %s in %s, nothing to check (name a file: relay check -c FILE; relay serve would run on the built-in defaults)",
			path, workingDir())
	}
	// Provisioning is part of the check: a schema that does not compile or
	// a plugin that does not start must fail here, not at serve time.
	pipeline, err := buildPipeline(ctx, cfg, configPathOf(source, path), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return err
	}
	pipeline.Close()
	// Keys are read and parsed here; a JWKS URL is not fetched (check works offline).
	authSet, err := auth.Build(cfg, auth.Options{Dir: configDir(source, path), Offline: true})
	if err != nil {
		return err
	}
	authSet.Close()
	fmt.Fprintf(stdout, "%s: ok (%d routes)\n", source, len(cfg.Routes))
	return nil
}

// configPathOf is the file a config came from, "" for the built-in defaults.
func configPathOf(source, path string) string {
	if source == builtInDefaults {
		return ""
	}
	return path
}

func serve(ctx context.Context, path string, explicit bool, stderr io.Writer) error {
	cfg, source, err := loadConfig(ctx, path, explicit)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log)
	if source == builtInDefaults {
		log.Warn("no config file: running on the built-in defaults (seed wire, any env, any Origin, no routes); write relay.yaml or name one with -c FILE",
			"looked_for", path, "dir", workingDir())
	}
	applyTraceProject(cfg, log)
	if cfg.Log.TokenSecret != "" {
		core.SetTokenIDKey([]byte(cfg.Log.TokenSecret))
	}
	budget := applyMemoryBudget(cfg, log)
	backplane, err := newBackplane(ctx, cfg, budget, log)
	if err != nil {
		return err
	}
	defer backplane.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	authSet, err := auth.Build(cfg, auth.Options{Dir: configDir(source, path), Log: log})
	if err != nil {
		ln.Close()
		return err
	}
	defer authSet.Close()
	warnOpenListener(log, ln.Addr(), authSet)
	srv := core.NewServer(cfg, log, backplane)
	srv.SetMemoryBudget(budget)
	srv.SetAuth(authSet)
	pipeline, err := buildPipeline(ctx, cfg, configPathOf(source, path), log, srv.Metrics())
	if err != nil {
		ln.Close()
		return err
	}
	srv.Hub().SetPipeline(pipeline)
	if source != builtInDefaults {
		reloader := &reloader{path: path, current: cfg, log: log, srv: srv}
		go reloader.run(ctx)
	}
	var metricsSrv *http.Server
	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			ln.Close()
			srv.Hub().SetPipeline(&core.Pipeline{}).Close()
			return fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
		metricsSrv = &http.Server{Handler: srv.MetricsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = metricsSrv.Serve(mln) }()
		log.Info("metrics listening", "addr", mln.Addr().String(), "token", cfg.Metrics.Token != "")
	}
	apiSrv, err := startAPI(cfg, srv, log)
	if err != nil {
		ln.Close()
		if metricsSrv != nil {
			_ = metricsSrv.Close()
		}
		srv.Hub().SetPipeline(&core.Pipeline{}).Close()
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	preset, why, header := srv.ClientAddresses()
	log.Info("relay listening", "addr", ln.Addr().String(), "path", cfg.Path, "config", source,
		"version", versionString(), "wire", cfg.Wire, "client_ip", preset, "client_ip_why", why, "client_ip_header", header)

	select {
	case err := <-served:
		if metricsSrv != nil {
			_ = metricsSrv.Close()
		}
		if apiSrv != nil {
			_ = apiSrv.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("relay shutting down", "timeout", cfg.Shutdown.Timeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Timeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("shutdown incomplete", "err", err)
	}
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(shutdownCtx)
	}
	if apiSrv != nil {
		_ = apiSrv.Shutdown(shutdownCtx)
	}
	srv.Hub().SetPipeline(&core.Pipeline{}).Close()
	log.Info("relay stopped")
	return nil
}

// applyMemoryBudget resolves limits.memory and makes it the Go runtime's
// soft memory limit, so that the garbage collector works harder as the
// budget nears instead of letting the heap double. A GOMEMLIMIT set in the
// environment is the operator's word and stays.
func applyMemoryBudget(cfg *config.Config, log *slog.Logger) core.MemoryBudget {
	budget := core.ResolveMemoryBudget(cfg.Limits.Memory)
	if budget.Limit <= 0 {
		log.Info("no memory budget", "source", budget.Source)
		return budget
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(budget.Limit)
	}
	log.Info("memory budget", "bytes", budget.Limit, "source", budget.Source,
		"history_bytes", budget.HistoryBytes(cfg.History.MaxBytes), "send_queue_bytes", budget.QueueBytes(),
		"go_memory_limit", debug.SetMemoryLimit(-1))
	return budget
}

// workingDir names the directory a relative config path was looked for in.
func workingDir() string {
	dir, err := os.Getwd()
	if err != nil {
		return "the working directory"
	}
	return dir
}

// configDir is where relative file names of the config start from.
func configDir(source, path string) string {
	if source == builtInDefaults {
		return ""
	}
	return filepath.Dir(path)
}

// warnOpenListener warns when relay listens beyond loopback while some env
// admits anyone who names a token (provider none).
func warnOpenListener(log *slog.Logger, addr net.Addr, a *auth.Set) {
	open := a.Unauthenticated()
	if len(open) == 0 {
		return
	}
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsLoopback() {
		return
	}
	scope := "every env"
	if open[0] != "" || len(open) > 1 {
		scope = "envs " + strings.Join(open, ", ")
		if open[0] == "" {
			scope = "envs without their own auth and " + strings.Join(open[1:], ", ")
		}
	}
	log.Warn("relay listens beyond loopback with auth provider none: anyone who knows a token can read its history, join it and replace its clients; configure auth (see docs/auth.md)",
		"addr", addr.String(), "unauthenticated", scope)
}

// newLogger writes JSON lines Cloud Logging understands (severity, message)
// or plain text.
func newLogger(w io.Writer, cfg config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) > 0 {
			return a
		}
		switch a.Key {
		case slog.LevelKey:
			return slog.String("severity", severity(a.Value.Any().(slog.Level)))
		case slog.MessageKey:
			a.Key = "message"
		}
		return a
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// resolveTraceProject takes log.trace_project from GOOGLE_CLOUD_PROJECT
// when the config leaves it empty. Cloud Run does not set that variable:
// the project id is on its metadata server, which relay does not ask, so
// the service sets it (deploy/cloudrun). A reloaded config is resolved the
// same way, so that it compares equal to the running one.
func resolveTraceProject(cfg *config.Config) {
	if cfg.Log.TraceProject == "" {
		if p := strings.TrimSpace(os.Getenv("GOOGLE_CLOUD_PROJECT")); !strings.ContainsAny(p, "/ \t") {
			cfg.Log.TraceProject = p
		}
	}
}

// applyTraceProject resolves log.trace_project and says, on Cloud Run, when
// there is none.
func applyTraceProject(cfg *config.Config, log *slog.Logger) {
	resolveTraceProject(cfg)
	if cfg.Log.TraceProject == "" && os.Getenv("K_SERVICE") != "" && cfg.Log.Format == "json" {
		log.Info("log lines carry no trace fields: set GOOGLE_CLOUD_PROJECT (or log.trace_project) to tie them to Cloud Run's request traces")
	}
}

func severity(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARNING"
	case l >= slog.LevelInfo:
		return "INFO"
	}
	return "DEBUG"
}
