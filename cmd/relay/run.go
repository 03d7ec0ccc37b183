package main

import (
	"context"
	"errors"
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
	"github.com/pairrelay/relay/internal/docgen"
	_ "github.com/pairrelay/relay/plugins" // registers the plugin handler
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: relay <command> [flags]

commands:
  serve [-c relay.yaml]   run the relay (built-in defaults when the file does not exist)
  check [-c relay.yaml]   validate a config file, provision its handlers, list every problem
  handlers                list the handlers routes can use
  docs [-o DIR]           write the reference docs and relay.schema.json from the code (into DIR, default .)
  version                 print the version
`

// Run executes one relay command; it returns when the command is done or,
// for serve, when ctx is cancelled and the graceful shutdown has finished.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "check":
		return check(ctx, args[1:], stdout)
	case "handlers":
		for _, spec := range core.HandlerSpecs() {
			fmt.Fprintf(stdout, "%-12s %s\n", spec.Name, spec.Summary)
		}
		return nil
	case "docs":
		return docgen.Run(args[1:], stdout, core.HandlerSpecs())
	case "version":
		fmt.Fprintln(stdout, "relay", versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func versionString() string {
	if version != "dev" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return version
}

// configFlag parses "-c FILE" (or a lone FILE argument) and reports whether
// the user named the file explicitly.
func configFlag(name string, args []string) (path string, explicit bool, err error) {
	fset := flag.NewFlagSet(name, flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	fset.StringVar(&path, "c", "relay.yaml", "config file")
	if err := fset.Parse(args); err != nil {
		return "", false, fmt.Errorf("%s: %w", name, err)
	}
	switch fset.NArg() {
	case 0:
	case 1:
		path = fset.Arg(0)
	default:
		return "", false, fmt.Errorf("%s: one config file at most, got %v", name, fset.Args())
	}
	fset.Visit(func(*flag.Flag) { explicit = true })
	return path, explicit || fset.NArg() == 1, nil
}

func check(ctx context.Context, args []string, stdout io.Writer) error {
	path, explicit, err := configFlag("check", args)
	if err != nil {
		return err
	}
	cfg, source, err := loadConfig(ctx, path, explicit)
	if err != nil {
		return err
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

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	path, explicit, err := configFlag("serve", args)
	if err != nil {
		return err
	}
	cfg, source, err := loadConfig(ctx, path, explicit)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log)
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
