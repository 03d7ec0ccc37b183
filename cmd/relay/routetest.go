package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

// relay test runs route tests: YAML files that send messages through the
// routes of a relay.yaml and say what must come out. The format is
// described in docs/testing.md; the runner builds the real pipeline (the
// same core.BuildPipeline serve uses) for each test, so every handler runs
// as in production except webhooks, whose requests get the canned answers
// the file declares.

var testCommand = &command{
	name:     "test",
	synopsis: "[-run REGEXP] [FILE|DIR...]",
	summary:  "run route tests (*.test.yaml) against their relay.yaml",
	about: "Runs the route tests of each FILE, or of every *.test.yaml in each DIR (default: the\n" +
		"working directory). A test sends messages through the real routes of its config file (default:\n" +
		"relay.yaml beside it) and checks which envs receive what, or how a message is rejected.\n" +
		"Plugins run for real; webhooks get the canned answers the test file declares. Prints a\n" +
		"readable difference for every failure and exits 1 when any test fails. See docs/testing.md.",
	setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
		run := fs.String("run", "", "run only the tests whose name matches `REGEXP`")
		return func(ctx context.Context, args []string) error {
			var filter *regexp.Regexp
			if *run != "" {
				var err error
				if filter, err = regexp.Compile(*run); err != nil {
					return usageErr(fmt.Sprintf("test: -run: %v", err))
				}
			}
			files, err := testFiles(args)
			if err != nil {
				return err
			}
			return runTestFiles(ctx, files, filter, out.stdout)
		}
	},
}

// testFiles expands the arguments of relay test into test files.
func testFiles(args []string) ([]string, error) {
	if len(args) == 0 {
		args = []string{"."}
	}
	var files []string
	for _, arg := range args {
		info, err := os.Stat(arg)
		if err != nil {
			return nil, fmt.Errorf("test: %w", err)
		}
		if !info.IsDir() {
			files = append(files, arg)
			continue
		}
		found, err := filepath.Glob(filepath.Join(arg, "*.test.yaml"))
		if err != nil {
			return nil, fmt.Errorf("test: %w", err)
		}
		if len(found) == 0 {
			dir := arg
			if abs, err := filepath.Abs(arg); err == nil {
				dir = abs
			}
			return nil, fmt.Errorf("test: no *.test.yaml in %s (name test files as arguments: relay test FILE...)", dir)
		}
		files = append(files, found...)
	}
	return files, nil
}

// testFile is one decoded test file.
type testFile struct {
	Config   string                  `yaml:"config"`
	Envs     []string                `yaml:"envs"`
	Webhooks map[string]cannedAnswer `yaml:"webhooks"`
	Tests    []testCase              `yaml:"tests"`

	path string
	root *ast.File
}

type testCase struct {
	Name     string                  `yaml:"name"`
	Token    string                  `yaml:"token"`
	Webhooks map[string]cannedAnswer `yaml:"webhooks"`
	// A test is one step written inline, or several under steps.
	Input  *testInput    `yaml:"input"`
	Output *[]wantOutput `yaml:"output"`
	Reject *wantReject   `yaml:"reject"`
	Steps  []testStep    `yaml:"steps"`

	line int
}

type testStep struct {
	Input  *testInput    `yaml:"input"`
	Output *[]wantOutput `yaml:"output"`
	Reject *wantReject   `yaml:"reject"`
}

// testInput is a message a client sends.
type testInput struct {
	From   string         `yaml:"from"`
	Type   string         `yaml:"type"`
	Data   *jsonValue     `yaml:"data"`
	ID     string         `yaml:"id"`
	To     []string       `yaml:"to"`
	Claims map[string]any `yaml:"claims"`
}

// wantOutput is one message that must come out of the routes, in order.
type wantOutput struct {
	To   *[]string  `yaml:"to"`
	Type string     `yaml:"type"`
	ID   *string    `yaml:"id"`
	Data *jsonValue `yaml:"data"`
	// DataContains is data that may hold more than it names: fields a
	// handler adds (a timestamp) are then checked with where, or not at all.
	DataContains *jsonValue           `yaml:"data_contains"`
	Where        map[string]condition `yaml:"where"`
}

// condition is a check on the value at a JSON path of an output message;
// every check it sets must hold.
type condition struct {
	Exists  *bool      `yaml:"exists"`
	Equals  *jsonValue `yaml:"equals"`
	Matches string     `yaml:"matches"`
	Type    string     `yaml:"type"`

	re *regexp.Regexp
}

type wantReject struct {
	Code            string `yaml:"code"`
	Message         string `yaml:"message"`
	MessageContains string `yaml:"message_contains"`
}

// cannedAnswer is what a webhook's endpoint answers in a test.
type cannedAnswer struct {
	Status  int               `yaml:"status"`
	Body    *jsonValue        `yaml:"body"`
	Headers map[string]string `yaml:"headers"`
}

// jsonValue is any YAML value, kept as the JSON it stands for.
type jsonValue struct{ raw json.RawMessage }

func (v *jsonValue) UnmarshalYAML(b []byte) error {
	var x any
	if err := yaml.Unmarshal(b, &x); err != nil {
		return err
	}
	raw, err := json.Marshal(x)
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	v.raw = raw
	return nil
}

func loadTestFile(path string) (*testFile, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tf := &testFile{path: path}
	dec := yaml.NewDecoder(bytes.NewReader(src), yaml.Strict())
	if err := dec.Decode(tf); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", path, yaml.FormatError(err, false, true))
	}
	if tf.root, err = parser.ParseBytes(src, 0); err != nil {
		return nil, fmt.Errorf("%s: %s", path, yaml.FormatError(err, false, true))
	}
	if len(tf.Tests) == 0 {
		return nil, fmt.Errorf("%s: no tests (a test file lists them under tests:)", path)
	}
	var probs []string
	bad := func(line int, format string, args ...any) {
		probs = append(probs, fmt.Sprintf("%s:%d: %s", path, line, fmt.Sprintf(format, args...)))
	}
	for i := range tf.Tests {
		tc := &tf.Tests[i]
		tc.line = tf.line(fmt.Sprintf("$.tests[%d]", i))
		where := fmt.Sprintf("tests[%d]", i)
		if tc.Name == "" {
			bad(tc.line, "%s: name: is required", where)
		}
		inline := tc.Input != nil || tc.Output != nil || tc.Reject != nil
		switch {
		case inline && len(tc.Steps) > 0:
			bad(tc.line, "%s: write input/output/reject or steps, not both", where)
		case inline:
			tc.Steps = []testStep{{Input: tc.Input, Output: tc.Output, Reject: tc.Reject}}
		case len(tc.Steps) == 0:
			bad(tc.line, "%s: no input: a test sends a message (input:) or several (steps:)", where)
		}
		for j := range tc.Steps {
			st := &tc.Steps[j]
			sw := where
			line := tc.line
			if !inline {
				sw = fmt.Sprintf("%s.steps[%d]", where, j)
				line = tf.line(fmt.Sprintf("$.tests[%d].steps[%d]", i, j))
			}
			switch {
			case st.Input == nil:
				bad(line, "%s: input: is required", sw)
			case st.Input.From == "":
				bad(line, "%s: input.from: is required (the env that sends it)", sw)
			case st.Input.Type == "":
				bad(line, "%s: input.type: is required", sw)
			case strings.HasPrefix(st.Input.Type, "relay."):
				bad(line, "%s: input.type: %q is reserved for the relay's own frames", sw, st.Input.Type)
			}
			if (st.Output == nil) == (st.Reject == nil) {
				bad(line, "%s: say what must happen: output: (the messages delivered, [] for none) or reject:", sw)
			}
			if st.Reject != nil && st.Reject.Code == "" && st.Reject.Message == "" && st.Reject.MessageContains == "" {
				bad(line, "%s: reject: name a code, a message or message_contains", sw)
			}
			if st.Output == nil {
				continue
			}
			for k := range *st.Output {
				where := (*st.Output)[k].Where
				for _, p := range slices.Sorted(mapKeys(where)) {
					c := where[p]
					if _, err := parseJSONPath(p); err != nil {
						bad(line, "%s: output[%d].where: %v", sw, k, err)
					}
					if c.Exists == nil && c.Equals == nil && c.Matches == "" && c.Type == "" {
						bad(line, "%s: output[%d].where.%s: give exists, equals, matches or type", sw, k, p)
					}
					if c.Matches != "" {
						re, err := regexp.Compile(c.Matches)
						if err != nil {
							bad(line, "%s: output[%d].where.%s.matches: %v", sw, k, p, err)
						}
						c.re = re
						where[p] = c
					}
					if c.Type != "" && !slices.Contains(jsonTypes, c.Type) {
						bad(line, "%s: output[%d].where.%s.type: %q is none of %s", sw, k, p, c.Type, strings.Join(jsonTypes, ", "))
					}
				}
			}
		}
	}
	if len(probs) > 0 {
		return nil, errors.New(strings.Join(probs, "\n"))
	}
	return tf, nil
}

// line is the line of the node at a YAML path of the file, 0 if none.
func (tf *testFile) line(path string) int {
	p, err := yaml.PathString(path)
	if err != nil {
		return 0
	}
	n, err := p.FilterFile(tf.root)
	if err != nil || n == nil || n.GetToken() == nil {
		return 0
	}
	return n.GetToken().Position.Line
}

// configPath is the relay.yaml the tests of a file run against.
func (tf *testFile) configPath() string {
	dir := filepath.Dir(tf.path)
	if tf.Config != "" {
		if filepath.IsAbs(tf.Config) {
			return tf.Config
		}
		return filepath.Join(dir, tf.Config)
	}
	// routes.test.yaml tests routes.yaml when there is one.
	if base, ok := strings.CutSuffix(filepath.Base(tf.path), ".test.yaml"); ok && base != "relay" {
		sibling := filepath.Join(dir, base+".yaml")
		if _, err := os.Stat(sibling); err == nil {
			return sibling
		}
	}
	return filepath.Join(dir, "relay.yaml")
}

// envs are the envs connected for a token in the tests: relay.yaml's envs,
// or the file's envs, or every env the file names.
func (tf *testFile) envs(cfg *config.Config) []string {
	if len(cfg.Envs) > 0 {
		var envs []string
		for env := range cfg.Envs {
			envs = append(envs, env)
		}
		slices.Sort(envs)
		return envs
	}
	if len(tf.Envs) > 0 {
		return slices.Sorted(slices.Values(tf.Envs))
	}
	seen := map[string]bool{}
	for _, tc := range tf.Tests {
		for _, st := range tc.Steps {
			seen[st.Input.From] = true
			for _, e := range st.Input.To {
				seen[e] = true
			}
			if st.Output != nil {
				for _, o := range *st.Output {
					if o.To != nil {
						for _, e := range *o.To {
							seen[e] = true
						}
					}
				}
			}
		}
	}
	var envs []string
	for e := range seen {
		envs = append(envs, e)
	}
	slices.Sort(envs)
	return envs
}

// runTestFiles runs every test of files and prints what happened; it fails
// when a test fails or a file cannot be run.
func runTestFiles(ctx context.Context, files []string, filter *regexp.Regexp, w io.Writer) error {
	var ran, failed int
	var broken []string
	for _, file := range files {
		r, f, err := runTestFile(ctx, file, filter, w)
		ran, failed = ran+r, failed+f
		if err != nil {
			fmt.Fprintf(w, "ERROR %s\n%s\n", file, indent(err.Error(), "      "))
			broken = append(broken, file)
		}
	}
	switch {
	case len(broken) > 0:
		return fmt.Errorf("test: could not run %s", strings.Join(broken, ", "))
	case failed > 0:
		fmt.Fprintf(w, "FAIL: %d of %d tests failed\n", failed, ran)
		return fmt.Errorf("test: %d of %d tests failed", failed, ran)
	case ran == 0:
		return errors.New("test: no test matched -run")
	}
	fmt.Fprintf(w, "PASS: %d tests\n", ran)
	return nil
}

func runTestFile(ctx context.Context, file string, filter *regexp.Regexp, w io.Writer) (ran, failed int, err error) {
	tf, err := loadTestFile(file)
	if err != nil {
		return 0, 0, err
	}
	cfgPath := tf.configPath()
	cfg, _, err := loadConfig(ctx, cfgPath, true)
	if err != nil {
		return 0, 0, err
	}
	envs := tf.envs(cfg)
	if len(cfg.Envs) > 0 {
		if err := tf.checkEnvs(cfg); err != nil {
			return 0, 0, err
		}
	}
	fmt.Fprintf(w, "%s (routes of %s; envs %s)\n", file, cfgPath, strings.Join(envs, ", "))
	for i := range tf.Tests {
		tc := &tf.Tests[i]
		if filter != nil && !filter.MatchString(tc.Name) {
			continue
		}
		ran++
		report, err := tf.run(ctx, cfg, cfgPath, envs, i)
		if err != nil {
			return ran, failed, err
		}
		if report == "" {
			fmt.Fprintf(w, "  ok    %s\n", tc.Name)
			continue
		}
		failed++
		fmt.Fprintf(w, "  FAIL  %s (%s:%d)\n%s", tc.Name, file, tc.line, indent(report, "        "))
	}
	return ran, failed, nil
}

// checkEnvs refuses a test that names an env relay.yaml does not allow: its
// client could not connect.
func (tf *testFile) checkEnvs(cfg *config.Config) error {
	var probs []string
	check := func(tc *testCase, what, env string) {
		if _, ok := cfg.Envs[env]; !ok {
			probs = append(probs, fmt.Sprintf("%s:%d: %s: %s: env %q is not in the envs of relay.yaml", tf.path, tc.line, tc.Name, what, env))
		}
	}
	for i := range tf.Tests {
		tc := &tf.Tests[i]
		for _, st := range tc.Steps {
			check(tc, "input.from", st.Input.From)
			for _, e := range st.Input.To {
				check(tc, "input.to", e)
			}
		}
	}
	if len(probs) > 0 {
		return errors.New(strings.Join(probs, "\n"))
	}
	return nil
}

// run runs test i on a pipeline of its own (so that rate limits and plugin
// state do not carry over from another test) and returns what went wrong,
// "" when it passed.
func (tf *testFile) run(ctx context.Context, cfg *config.Config, cfgPath string, envs []string, i int) (string, error) {
	tc := &tf.Tests[i]
	hooks := &webhookAnswers{test: tc.Webhooks, file: tf.Webhooks}
	pipeline, err := core.BuildPipelineWith(ctx, cfg, cfgPath, core.PipelineOptions{
		Log:       slog.New(slog.DiscardHandler),
		Transport: hooks.transport,
	})
	if err != nil {
		return "", refused(cfgPath, buildProblems(cfg, err))
	}
	defer pipeline.Close()
	token := tc.Token
	if token == "" {
		token = fmt.Sprintf("test-%d", i+1)
	}
	var report strings.Builder
	for j, st := range tc.Steps {
		hooks.reset()
		in := st.Input
		m := &core.Message{Type: in.Type, ID: in.ID, To: in.To, From: in.From, Token: token, Claims: in.Claims}
		if in.Data != nil {
			m.Data = in.Data.raw
		}
		sent := describeInput(in)
		out, route, err := pipeline.Process(ctx, m)
		var diffs []string
		if err != nil {
			diffs = checkRejection(st, route, err)
		} else {
			diffs = checkOutputs(st, route, out, envs)
		}
		diffs = append(diffs, hooks.problems()...)
		if len(diffs) == 0 {
			continue
		}
		if len(tc.Steps) > 1 {
			fmt.Fprintf(&report, "step %d: %s\n", j+1, sent)
		} else {
			fmt.Fprintf(&report, "%s\n", sent)
		}
		for _, d := range diffs {
			report.WriteString(indent(d, "  "))
		}
		// Later steps build on this one: what they report would mislead.
		switch left := len(tc.Steps) - 1 - j; left {
		case 0:
		case 1:
			report.WriteString("  (the step after it was not run)\n")
		default:
			fmt.Fprintf(&report, "  (the %d steps after it were not run)\n", left)
		}
		break
	}
	return report.String(), nil
}

func describeInput(in *testInput) string {
	s := fmt.Sprintf("%s sends %s", in.From, in.Type)
	if in.ID != "" {
		s += " id " + in.ID
	}
	if in.Data != nil {
		s += " " + shorten(string(in.Data.raw))
	}
	if in.To != nil {
		s += " to " + listEnvs(in.To)
	}
	return s
}

// routeName names the route that decided about a message, for reports.
func routeName(route string) string {
	if route == "" {
		return "no route (unmatched)"
	}
	return "route " + route
}

func checkRejection(st testStep, route string, err error) []string {
	var cerr *core.ClientError
	if !errors.As(err, &cerr) {
		cerr = &core.ClientError{Code: core.ErrRejected, Message: err.Error()}
	}
	got := fmt.Sprintf("rejected by %s: %s: %s", routeName(route), cerr.Code, cerr.Message)
	if cause := cerr.Cause(); cause != nil {
		// A client sees only the ref; the test's reader needs the reason.
		got += fmt.Sprintf("\n  (the failure, which relay logs: %v)", cause)
	}
	if st.Reject == nil {
		return []string{fmt.Sprintf("want %s, got %s", countOutputs(len(*st.Output)), got)}
	}
	var diffs []string
	want := st.Reject
	if want.Code != "" && want.Code != cerr.Code {
		diffs = append(diffs, fmt.Sprintf("reject code: want %s, got %s", want.Code, cerr.Code))
	}
	if want.Message != "" && want.Message != cerr.Message {
		diffs = append(diffs, fmt.Sprintf("reject message:\n  want %q\n  got  %q", want.Message, cerr.Message))
	}
	if want.MessageContains != "" && !strings.Contains(cerr.Message, want.MessageContains) {
		diffs = append(diffs, fmt.Sprintf("reject message: want it to contain %q, got %q", want.MessageContains, cerr.Message))
	}
	if len(diffs) > 0 {
		diffs = append(diffs, got)
	}
	return diffs
}

func countOutputs(n int) string {
	switch n {
	case 0:
		return "nothing delivered"
	case 1:
		return "1 message delivered"
	}
	return fmt.Sprintf("%d messages delivered", n)
}

func checkOutputs(st testStep, route string, out []*core.Message, envs []string) []string {
	got := make([]map[string]any, len(out))
	receivers := make([][]string, len(out))
	for i, m := range out {
		receivers[i] = []string{}
		for _, env := range envs {
			if m.Addressed(env) {
				receivers[i] = append(receivers[i], env)
			}
		}
		got[i] = messageObject(m, receivers[i])
	}
	if st.Reject != nil {
		lines := []string{fmt.Sprintf("want a rejection, got %s by %s:", countOutputs(len(out)), routeName(route))}
		for i := range got {
			lines = append(lines, fmt.Sprintf("  %d. %s", i+1, describeOutput(got[i])))
		}
		return []string{strings.Join(lines, "\n")}
	}
	want := *st.Output
	var diffs []string
	if len(want) != len(out) {
		lines := []string{fmt.Sprintf("want %s, got %s by %s", countOutputs(len(want)), countOutputs(len(out)), routeName(route))}
		if len(out) > 0 {
			lines[0] += ":"
		}
		for i := range got {
			lines = append(lines, fmt.Sprintf("  %d. %s", i+1, describeOutput(got[i])))
		}
		return []string{strings.Join(lines, "\n")}
	}
	for i, w := range want {
		var d []string
		if w.To != nil {
			wantTo := slices.Sorted(slices.Values(*w.To))
			if !slices.Equal(wantTo, receivers[i]) {
				d = append(d, fmt.Sprintf("to: want %s, got %s", listEnvs(wantTo), listEnvs(receivers[i])))
			}
		}
		if w.Type != "" && w.Type != out[i].Type {
			d = append(d, fmt.Sprintf("type: want %s, got %s", w.Type, out[i].Type))
		}
		if w.ID != nil && *w.ID != out[i].ID {
			d = append(d, fmt.Sprintf("id: want %q, got %q", *w.ID, out[i].ID))
		}
		if w.Data != nil {
			var wantData any
			_ = json.Unmarshal(w.Data.raw, &wantData)
			d = append(d, diffJSON("data", wantData, got[i]["data"], false)...)
		}
		if w.DataContains != nil {
			var wantData any
			_ = json.Unmarshal(w.DataContains.raw, &wantData)
			d = append(d, diffJSON("data", wantData, got[i]["data"], true)...)
		}
		for _, p := range slices.Sorted(mapKeys(w.Where)) {
			path, _ := parseJSONPath(p)
			d = append(d, w.Where[p].check(p, path, got[i])...)
		}
		if len(d) > 0 {
			label := "message"
			if len(want) > 1 {
				label = fmt.Sprintf("message %d", i+1)
			}
			lines := []string{fmt.Sprintf("%s (%s) differs:", label, routeName(route))}
			for _, x := range d {
				lines = append(lines, "  "+x)
			}
			lines = append(lines, "  got: "+describeOutput(got[i]))
			diffs = append(diffs, strings.Join(lines, "\n"))
		}
	}
	return diffs
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// messageObject is an output message as JSON paths see it.
func messageObject(m *core.Message, receivers []string) map[string]any {
	obj := map[string]any{"type": m.Type, "from": m.From}
	if m.ID != "" {
		obj["id"] = m.ID
	}
	if m.Data != nil {
		var data any
		if json.Unmarshal(m.Data, &data) == nil {
			obj["data"] = data
		}
	}
	to := make([]any, len(receivers))
	for i, r := range receivers {
		to[i] = r
	}
	obj["to"] = to
	return obj
}

func describeOutput(obj map[string]any) string {
	s := fmt.Sprintf("%v to %s", obj["type"], listEnvs(anyStrings(obj["to"])))
	if id, ok := obj["id"]; ok {
		s += fmt.Sprintf(" id %v", id)
	}
	if data, ok := obj["data"]; ok {
		s += " " + jsonText(data)
	}
	return s
}

func anyStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, len(list))
	for i, x := range list {
		out[i] = fmt.Sprint(x)
	}
	return out
}

func listEnvs(envs []string) string {
	if len(envs) == 0 {
		return "no env"
	}
	return "[" + strings.Join(envs, ", ") + "]"
}

// jsonText is v as compact JSON, shortened for a report line.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return shorten(string(b))
}

func shorten(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// diffJSON lists, one line per path, how got differs from want. With
// subset, objects in got may have keys want does not name.
func diffJSON(path string, want, got any, subset bool) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		var out []string
		keys := slices.Sorted(mapKeys(w))
		for _, k := range keys {
			gv, present := g[k]
			if !present {
				out = append(out, fmt.Sprintf("%s.%s: want %s, missing", path, k, jsonText(w[k])))
				continue
			}
			out = append(out, diffJSON(path+"."+k, w[k], gv, subset)...)
		}
		for _, k := range slices.Sorted(mapKeys(g)) {
			if _, wanted := w[k]; !wanted && !subset {
				out = append(out, fmt.Sprintf("%s.%s: not wanted, got %s", path, k, jsonText(g[k])))
			}
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok {
			break
		}
		var out []string
		for i := 0; i < len(w) || i < len(g); i++ {
			p := fmt.Sprintf("%s[%d]", path, i)
			switch {
			case i >= len(g):
				out = append(out, fmt.Sprintf("%s: want %s, missing", p, jsonText(w[i])))
			case i >= len(w):
				out = append(out, fmt.Sprintf("%s: not wanted, got %s", p, jsonText(g[i])))
			default:
				out = append(out, diffJSON(p, w[i], g[i], subset)...)
			}
		}
		return out
	}
	if jsonEqual(want, got) {
		return nil
	}
	if got == nil {
		return []string{fmt.Sprintf("%s: want %s, got null or nothing", path, jsonText(want))}
	}
	return []string{fmt.Sprintf("%s: want %s, got %s", path, jsonText(want), jsonText(got))}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

var jsonTypes = []string{"string", "number", "integer", "boolean", "object", "array", "null"}

// check reports how the value at path of msg fails c.
func (c condition) check(name string, path []any, msg map[string]any) []string {
	v, found := lookupJSONPath(msg, path)
	var out []string
	if c.Exists != nil && *c.Exists != found {
		if found {
			out = append(out, fmt.Sprintf("%s: want it absent, got %s", name, jsonText(v)))
		} else {
			out = append(out, fmt.Sprintf("%s: want it to exist, it is absent", name))
		}
	}
	if c.Equals != nil {
		var want any
		_ = json.Unmarshal(c.Equals.raw, &want)
		switch {
		case !found:
			out = append(out, fmt.Sprintf("%s: want %s, it is absent", name, jsonText(want)))
		case !jsonEqual(want, v):
			out = append(out, fmt.Sprintf("%s: want %s, got %s", name, jsonText(want), jsonText(v)))
		}
	}
	if c.re != nil {
		s, isString := v.(string)
		if !isString {
			s = jsonText(v)
		}
		switch {
		case !found:
			out = append(out, fmt.Sprintf("%s: want a match of /%s/, it is absent", name, c.Matches))
		case !c.re.MatchString(s):
			out = append(out, fmt.Sprintf("%s: want a match of /%s/, got %s", name, c.Matches, jsonText(v)))
		}
	}
	if c.Type != "" {
		switch got := jsonType(v); {
		case !found:
			out = append(out, fmt.Sprintf("%s: want a value of type %s, it is absent", name, c.Type))
		case got != c.Type && (c.Type != "number" || got != "integer"):
			out = append(out, fmt.Sprintf("%s: want a value of type %s, got %s %s", name, c.Type, got, jsonText(v)))
		}
	}
	return out
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// parseJSONPath reads a path such as data.items[0].name (a leading $. is
// allowed) into object keys (strings) and array indexes (ints).
func parseJSONPath(p string) ([]any, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
	if s == "" {
		return nil, fmt.Errorf("%q: an empty path (write data.FIELD)", p)
	}
	var path []any
	for _, part := range strings.Split(s, ".") {
		key, rest, _ := strings.Cut(part, "[")
		if key == "" && len(path) == 0 {
			return nil, fmt.Errorf("%q: a path starts with a field, such as data", p)
		}
		if key != "" {
			path = append(path, key)
		} else if rest == "" {
			return nil, fmt.Errorf("%q: an empty field name", p)
		}
		for rest != "" {
			idx, after, ok := strings.Cut(rest, "]")
			var n int
			if _, err := fmt.Sscanf(idx, "%d", &n); !ok || err != nil || n < 0 || fmt.Sprint(n) != idx {
				return nil, fmt.Errorf("%q: [%s] is not an array index", p, idx)
			}
			path = append(path, n)
			if after == "" {
				break
			}
			if !strings.HasPrefix(after, "[") {
				return nil, fmt.Errorf("%q: unexpected %q after ]", p, after)
			}
			rest = after[1:]
		}
	}
	return path, nil
}

func lookupJSONPath(v any, path []any) (any, bool) {
	for _, step := range path {
		switch s := step.(type) {
		case string:
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, false
			}
			if v, ok = obj[s]; !ok {
				return nil, false
			}
		case int:
			list, ok := v.([]any)
			if !ok || s >= len(list) {
				return nil, false
			}
			v = list[s]
		}
	}
	return v, true
}

func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix) + "\n"
}

// webhookAnswers stands in for every webhook endpoint during a test: the
// webhook handler sends its real request and reads the canned answer
// declared for its route (in the test, else in the file), or, for a key
// that is a URL, for its url.
type webhookAnswers struct {
	test, file map[string]cannedAnswer

	mu      sync.Mutex
	missing []string
}

func (h *webhookAnswers) transport(route string) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Body != nil {
			_, _ = io.Copy(io.Discard, req.Body)
			req.Body.Close()
		}
		answer, ok := h.lookup(route, req.URL.String())
		if !ok {
			h.mu.Lock()
			h.missing = append(h.missing, fmt.Sprintf("route %s called its webhook (%s), which has no canned answer: declare one under webhooks: %s: {status: 200} in the test or the file",
				route, req.URL.Redacted(), route))
			h.mu.Unlock()
			return nil, fmt.Errorf("relay test: no canned answer for the webhook of route %s", route)
		}
		status := answer.Status
		if status == 0 {
			status = http.StatusOK
		}
		var body []byte
		if answer.Body != nil {
			body = answer.Body.raw
			// A YAML string is sent as text, as an endpoint's plain answer.
			var text string
			if json.Unmarshal(body, &text) == nil {
				body = []byte(text)
			}
		}
		header := http.Header{}
		for k, v := range answer.Headers {
			header.Set(k, v)
		}
		return &http.Response{
			StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: header, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
			Request: req,
		}, nil
	})
}

func (h *webhookAnswers) lookup(route, url string) (cannedAnswer, bool) {
	for _, answers := range []map[string]cannedAnswer{h.test, h.file} {
		if a, ok := answers[route]; ok {
			return a, true
		}
		if a, ok := answers[url]; ok {
			return a, true
		}
	}
	return cannedAnswer{}, false
}

func (h *webhookAnswers) reset() {
	h.mu.Lock()
	h.missing = nil
	h.mu.Unlock()
}

func (h *webhookAnswers) problems() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.missing)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
