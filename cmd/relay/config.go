package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

const builtInDefaults = "built-in defaults"

// loadConfig reads path, or the built-in defaults when path was not named
// explicitly and does not exist. A file with any problem is refused with
// every problem at once: those of the file itself, handler names that do not
// exist and, as the file must be fixed anyway, those of provisioning the
// handlers that are left (a schema or an expression that does not compile, a
// plugin that does not start), so that one run of relay check, relay serve
// or a reload lists everything there is to fix.
func loadConfig(ctx context.Context, path string, explicit bool) (cfg *config.Config, source string, err error) {
	cfg, probs, err := config.LoadAll(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			cfg, err = config.Parse(nil, builtInDefaults)
			return cfg, builtInDefaults, err
		}
		return nil, path, err
	}
	if cfg == nil { // not YAML that can be read: nothing to provision
		return nil, path, refused(path, probs)
	}
	probs = append(probs, cfg.DropUnknownHandlers(handlerNames())...)
	if len(probs) == 0 {
		return cfg, path, nil
	}
	// cfg holds only what decoded; it is built to find problems, then closed.
	pipeline, err := core.BuildPipeline(ctx, cfg, path, slog.New(slog.DiscardHandler), nil)
	if err == nil {
		pipeline.Close()
	}
	return nil, path, refused(path, append(probs, buildProblems(cfg, err)...))
}

// buildPipeline is core.BuildPipeline with its errors as located Problems,
// in file order like those of the config file.
func buildPipeline(ctx context.Context, cfg *config.Config, configPath string, log *slog.Logger, metrics *core.Metrics) (*core.Pipeline, error) {
	pipeline, err := core.BuildPipeline(ctx, cfg, configPath, log, metrics)
	if err != nil {
		name := configPath
		if name == "" {
			name = builtInDefaults
		}
		return nil, refused(name, buildProblems(cfg, err))
	}
	return pipeline, nil
}

func handlerNames() []string {
	specs := core.HandlerSpecs()
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return names
}

// problemsError is every problem of one config file; its first line counts
// them, the others list them in file order.
type problemsError struct {
	name  string
	probs config.Problems
}

func (e *problemsError) Error() string {
	what := "problems"
	if len(e.probs) == 1 {
		what = "problem"
	}
	return fmt.Sprintf("%s: %d %s:\n%s", e.name, len(e.probs), what, e.probs.Error())
}

func (e *problemsError) Unwrap() error { return e.probs }

func refused(name string, probs config.Problems) error {
	return &problemsError{name: name, probs: probs}
}

// buildProblems turns the error of core.BuildPipeline, which joins one error
// per broken handler entry, into Problems. A handler's own settings come as
// Problems already; a provisioning error reads "FILE:LINE: routes[i].handlers[j]
// (NAME): reason" and is matched to its entry to keep its line.
func buildProblems(cfg *config.Config, err error) config.Problems {
	if err == nil {
		return nil
	}
	errs := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		errs = joined.Unwrap()
	}
	var probs config.Problems
	for _, e := range errs {
		var ps config.Problems
		if errors.As(e, &ps) {
			probs = append(probs, ps...)
			continue
		}
		probs = append(probs, locate(cfg, e.Error()))
	}
	return probs
}

// locate finds the handler entry a provisioning error names; one it cannot
// place keeps its whole text and is listed last.
func locate(cfg *config.Config, msg string) config.Problem {
	for i := range cfg.Routes {
		for j := range cfg.Routes[i].Handlers {
			hc := &cfg.Routes[i].Handlers[j]
			rest, ok := strings.CutPrefix(msg, hc.Where()+": ")
			if ok && strings.HasPrefix(rest, hc.Path()+" (") && hc.Line() > 0 {
				return config.Problem{File: hc.File(), Line: hc.Line(), Message: rest}
			}
		}
	}
	return config.Problem{Message: msg}
}
