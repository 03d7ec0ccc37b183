package handlers

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"testing"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// build makes a handler from a YAML snippet the way relay does: registry,
// strict decode, Provision, Validate. It closes the handler after the test.
func build(t testing.TB, snippet string) core.Handler {
	t.Helper()
	h, err := tryBuild(snippet, nil)
	if err != nil {
		t.Fatalf("build:\n%s\nerror: %v", snippet, err)
	}
	t.Cleanup(func() {
		if c, ok := h.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	})
	return h
}

func tryBuild(snippet string, log *slog.Logger) (core.Handler, error) {
	return tryBuildNamed(snippet, "test.yaml", log)
}

func tryBuildNamed(snippet, name string, log *slog.Logger) (core.Handler, error) {
	hc, err := config.NewHandlerConfig(snippet, name)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return core.BuildHandler(context.Background(), &hc, core.ProvisionEnv{Log: log, Route: "test", BaseDir: "testdata"})
}

// msg is a message as handlers see it, from h5 on token tok-1.
func msg(typ, data string) *core.Message {
	m := &core.Message{Type: typ, Token: "tok-1", From: "h5", ID: "c-1", TS: 1700000000000}
	if data != "" {
		m.Data = []byte(data)
	}
	return m
}

// rejectCode returns the code of a Reject, or "" when err is no rejection.
func rejectCode(err error) string {
	var ce *core.ClientError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return ""
}

// outcome sums up a Handle result for table tests: "pass", "drop",
// "fanout", "reject:CODE" or "fail".
func outcome(out []*core.Message, err error) string {
	switch {
	case err != nil && rejectCode(err) != "":
		return "reject:" + rejectCode(err)
	case err != nil:
		return "fail"
	case len(out) == 0:
		return "drop"
	case len(out) == 1:
		return "pass"
	}
	return "fanout"
}

// jsonEqual compares two JSON texts by value.
func jsonEqual(t testing.TB, got []byte, want string) bool {
	t.Helper()
	if want == "" {
		return got == nil
	}
	var a, b bytes.Buffer
	if err := compactSorted(&a, got); err != nil {
		t.Fatalf("got invalid JSON %q: %v", got, err)
	}
	if err := compactSorted(&b, []byte(want)); err != nil {
		t.Fatalf("want invalid JSON %q: %v", want, err)
	}
	return a.String() == b.String()
}

// undocumented lists the settings of h (exported fields with a yaml tag)
// that have no doc tag.
func undocumented(h any) []string {
	var missing []string
	t := reflect.TypeOf(h).Elem()
	for f := range t.Fields() {
		if f.IsExported() && f.Tag.Get("yaml") != "" && f.Tag.Get("doc") == "" {
			missing = append(missing, f.Name)
		}
	}
	return missing
}
