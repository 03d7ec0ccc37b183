package docgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
	_ "github.com/pairrelay/relay/handlers" // registers the built-in handlers
	_ "github.com/pairrelay/relay/plugins"  // registers the plugin handler
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

// TestCommittedFilesAreCurrent regenerates the docs into a temporary
// directory and compares them with the committed ones.
func TestCommittedFilesAreCurrent(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := Run(dir, &out, core.HandlerSpecs()); err != nil {
		t.Fatal(err)
	}
	files, err := Generate(core.HandlerSpecs())
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Fatalf("relay docs -o %s did not write %s: %v\n%s", dir, f.Path, err, out.String())
		}
		files[i].Data = data
	}
	stale, err := Stale(repoRoot, files)
	if err != nil {
		t.Fatal(err)
	}
	if len(stale) > 0 {
		t.Errorf("generated docs are stale:\n\t%s\nrun `make docs` (go run ./cmd/relay docs -o .) in the repository root and commit the result",
			strings.Join(stale, "\n\t"))
	}
}

func allSettings(t *testing.T) (keys []*Setting, hs []Handler) {
	t.Helper()
	hs, err := handlers(core.HandlerSpecs())
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) == 0 {
		t.Fatal("no handlers registered")
	}
	return configSettings(), hs
}

// TestEveryKeyHasADoc checks the tags that the docs and the schema are
// written from: every key and handler is described, and what the docs read
// out of the text (defaults, "Set this or KEY.") makes sense.
func TestEveryKeyHasADoc(t *testing.T) {
	keys, hs := allSettings(t)
	var problems []string
	check := func(where string, list []*Setting) {
		siblings := map[string]bool{}
		for _, s := range list {
			siblings[s.Key] = true
		}
		walk(list, func(s *Setting) {
			name := where + s.Path
			if s.Doc == "" {
				problems = append(problems, name+": no doc tag")
			}
			if alt := s.Alternative(); alt != "" && !siblings[alt] {
				problems = append(problems, fmt.Sprintf("%s: doc says %q, which is not a setting beside it", name, "Set this or "+alt))
			}
			if _, err := defaultValue(s); err != nil {
				problems = append(problems, fmt.Sprintf("%s: default tag %q is not a %s: %v", name, s.Default, typeWords(s), err))
			}
			if s.HasDefault && s.Required() {
				problems = append(problems, name+": required, yet has a default tag")
			}
		})
	}
	check("relay.yaml ", keys)
	for _, h := range hs {
		if strings.TrimSpace(h.Summary) == "" {
			problems = append(problems, "handler "+h.Name+": no Summary")
		}
		check("handler "+h.Name+" setting ", h.Settings)
	}
	if len(problems) > 0 {
		t.Errorf("fix these doc tags (they are the documentation `relay docs` writes):\n\t%s", strings.Join(problems, "\n\t"))
	}
}

// TestDefaultTagsMatchTheCode compares each default tag with the value the
// code really starts from: config.Default(), a route as Parse completes
// it, and each handler's New().
func TestDefaultTagsMatchTheCode(t *testing.T) {
	keys, hs := allSettings(t)
	parsed, err := config.Parse([]byte("routes:\n  - match: {type: x}\n"), "route defaults")
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	var compare func(where string, list []*Setting, v reflect.Value)
	compare = func(where string, list []*Setting, v reflect.Value) {
		for _, s := range list {
			fv := v.FieldByIndex(s.field)
			mapping := s.Type.Kind() == reflect.Struct && s.Type != durationType
			switch {
			case s.Required() || mapping && !s.HasDefault:
				// A required key's value came from the test; a section's from its keys.
			case !s.HasDefault && !empty(fv):
				problems = append(problems, fmt.Sprintf("%s%s: the code's default is %v, and there is no default tag", where, s.Path, fv.Interface()))
			case s.HasDefault:
				want, err := goValue(s)
				if err != nil {
					continue // TestEveryKeyHasADoc reports it
				}
				if !reflect.DeepEqual(want.Interface(), fv.Interface()) {
					problems = append(problems, fmt.Sprintf("%s%s: default tag %q, but the code's default is %v", where, s.Path, s.Default, fv.Interface()))
				}
			}
			switch {
			case s.Type.Kind() == reflect.Struct && s.Type != durationType && s.Type != handlerConfigType:
				compare(where, s.Children, fv)
			case s.Path == "routes":
				compare(where, s.Children, reflect.ValueOf(parsed.Routes[0]))
			}
		}
	}
	compare("relay.yaml ", keys, reflect.ValueOf(*config.Default()))
	for _, spec := range core.HandlerSpecs() {
		i := slices.IndexFunc(hs, func(h Handler) bool { return h.Name == spec.Name })
		compare("handler "+spec.Name+" setting ", hs[i].Settings, reflect.ValueOf(spec.New()).Elem())
	}
	if len(problems) > 0 {
		t.Errorf("default tags disagree with the code:\n\t%s", strings.Join(problems, "\n\t"))
	}
}

func empty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map:
		return v.Len() == 0
	}
	return v.IsZero()
}

// compileSchema compiles a relay.schema.json.
func compileSchema(t *testing.T, data []byte) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("relay.schema.json: %v", err)
	}
	c := jsonschema.NewCompiler()
	const url = "file:///relay.schema.json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatalf("relay.schema.json does not compile: %v", err)
	}
	return sch
}

// decodeYAML decodes YAML into the JSON values the validator takes.
func decodeYAML(t *testing.T, src []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(src, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func generatedSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	files, err := Generate(core.HandlerSpecs())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(files, func(f File) bool { return f.Path == SchemaPath })
	return compileSchema(t, files[i].Data)
}

// TestShippedConfigMatchesSchema validates the repository's relay.yaml and
// a config setting every key against the committed relay.schema.json.
func TestShippedConfigMatchesSchema(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, SchemaPath))
	if err != nil {
		t.Fatal(err)
	}
	sch := compileSchema(t, data)
	for _, name := range []string{"relay.yaml", "config/testdata/valid.yaml"} {
		src, err := os.ReadFile(filepath.Join(repoRoot, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(decodeYAML(t, src)); err != nil {
			t.Errorf("%s does not match relay.schema.json: %v", name, err)
		}
	}
}

// TestSchemaFlagsMistakes checks that the schema refuses what relay refuses
// and accepts what relay accepts, handler settings included.
func TestSchemaFlagsMistakes(t *testing.T) {
	sch := generatedSchema(t)
	valid := []string{
		"",
		"listen: \":${PORT:8080}\"\nlimits: {max_frame_bytes: \"${MAX_FRAME:65536}\", write_timeout: 1m30s}",
		"envs:\n  h5:\n  miniapp: {wire: v1}",
		"log: {level: \"${LOG_LEVEL:info}\"}",
		"routes:\n  - match: {type: a}\n    handlers:\n      - handler: drop",
		"routes:\n  - match: {type: a}\n    handlers:\n      - handler: webhook\n        url: https://example.com/hook\n        headers: {Authorization: \"Bearer ${SECRET}\"}\n        timeout: 500ms",
		"routes:\n  - match: {type: a}\n    handlers:\n      - handler: validate\n        schema_file: schemas/a.json",
		"routes:\n  - match: {type: a}\n    handlers:\n      - handler: validate\n        schema: {type: object}\n        target: message",
		"routes:\n  - match: {type: a}\n    handlers:\n      - handler: log\n        fields: [type, token]",
		exampleRoutes,
	}
	for _, src := range valid {
		if err := sch.Validate(decodeYAML(t, []byte(src))); err != nil {
			t.Errorf("schema refuses a valid config:\n%s\n%v", src, err)
		}
	}
	invalid := map[string]string{
		"unknown key":                   "lisen: \":8080\"",
		"unknown nested key":            "limits: {max_frame: 1}",
		"unknown env setting":           "envs: {h5: {wires: v1}}",
		"wrong type":                    "limits: {burst: lots}",
		"not a duration":                "heartbeat: {interval: 10 seconds}",
		"not one of the values":         "wire: v2",
		"route without match":           "routes:\n  - handlers: []",
		"route without type":            "routes:\n  - match: {from: [h5]}",
		"unknown route key":             "routes:\n  - match: {type: a}\n    retries: 1",
		"entry without handler":         "routes:\n  - match: {type: a}\n    handlers:\n      - rate: 1",
		"unknown handler":               "routes:\n  - match: {type: a}\n    handlers:\n      - handler: nope",
		"unknown handler setting":       "routes:\n  - match: {type: a}\n    handlers:\n      - handler: webhook\n        url: https://example.com\n        urls: []",
		"another handler's setting":     "routes:\n  - match: {type: a}\n    handlers:\n      - handler: drop\n        rate: 1",
		"missing required setting":      "routes:\n  - match: {type: a}\n    handlers:\n      - handler: rate_limit\n        burst: 2",
		"wrong handler setting type":    "routes:\n  - match: {type: a}\n    handlers:\n      - handler: rate_limit\n        rate: fast",
		"neither of a required pair":    "routes:\n  - match: {type: a}\n    handlers:\n      - handler: validate",
		"both of an exclusive pair":     "routes:\n  - match: {type: a}\n    handlers:\n      - handler: validate\n        schema: {}\n        schema_file: a.json",
		"handler setting not in values": "routes:\n  - match: {type: a}\n    handlers:\n      - handler: rate_limit\n        rate: 1\n        per: user",
	}
	for name, src := range invalid {
		if err := sch.Validate(decodeYAML(t, []byte(src))); err == nil {
			t.Errorf("%s: schema accepts\n%s", name, src)
		}
	}
}

// TestExamplesWork checks that the examples in the docs are what relay
// accepts: the routes of docs/config.md build, and each handler page's
// entry decodes strictly into that handler.
func TestExamplesWork(t *testing.T) {
	cfg, err := config.Parse([]byte(exampleRoutes), "docs/config.md")
	if err != nil {
		t.Fatalf("the example routes of docs/config.md: %v", err)
	}
	p, err := core.BuildPipeline(context.Background(), cfg, "", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("the example routes of docs/config.md: %v", err)
	}
	p.Close()

	_, hs := allSettings(t)
	for _, h := range hs {
		entry := exampleEntry(h)
		// The entry is an item of a list: "- handler: NAME\n  key: value\n".
		mapping := strings.ReplaceAll("  "+strings.TrimPrefix(entry, "- "), "\n  ", "\n")[2:]
		hc, err := config.NewHandlerConfig(mapping, "docs/handlers/"+h.Name+".md")
		if err != nil {
			t.Errorf("%s example:\n%s%v", h.Name, entry, err)
			continue
		}
		spec, _ := core.LookupHandler(h.Name)
		if err := hc.Decode(spec.New()); err != nil {
			t.Errorf("%s example:\n%s%v", h.Name, entry, err)
		}
	}
}

func TestEnumFromDoc(t *testing.T) {
	for _, c := range []struct {
		doc, def   string
		hasDefault bool
		want       []string
	}{
		{"debug, info, warn or error.", "info", true, []string{"debug", "info", "warn", "error"}},
		{"json (Cloud Logging compatible, with severity) or text.", "json", true, []string{"json", "text"}},
		{"What happens: reject (the sender gets relay.error), pass (unchanged) or drop.", "reject", true, []string{"reject", "pass", "drop"}},
		{"Wire for this env: seed or v1. Empty: the top-level wire.", "", false, []string{"", "seed", "v1"}},
		{"Level: a or b.", "c", true, nil}, // the default must be one of them
		{"Message type: exact (addMaterial) or a glob (material.*, *). Required.", "", false, nil},
		{"Name used in errors, logs and metrics.", "", false, nil},
		{"keep: messages go on; drop: they are dropped.", "keep", true, nil},
		{"Path of a file. Set this or schema.", "", false, nil},
	} {
		if got := enumFromDoc(c.doc, c.def, c.hasDefault); !slices.Equal(got, c.want) {
			t.Errorf("enumFromDoc(%q, %q) = %q, want %q", c.doc, c.def, got, c.want)
		}
	}
}

func TestRunWritesOnlyChangesAndRemovesOrphans(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := Run(dir, &out, core.HandlerSpecs()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "wrote "+ConfigPath) || !strings.Contains(out.String(), "wrote "+SchemaPath) {
		t.Errorf("first run:\n%s", out.String())
	}
	orphan := filepath.Join(dir, "docs", "handlers", "gone.md")
	mine := filepath.Join(dir, "docs", "handlers", "notes.md") // not generated: left alone
	if err := os.WriteFile(orphan, []byte(generatedMarker+"\n\n# gone\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mine, []byte("# notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := Generate(core.HandlerSpecs())
	if err != nil {
		t.Fatal(err)
	}
	stale, err := Stale(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"docs/handlers/gone.md (no handler of that name)"}; !slices.Equal(stale, want) {
		t.Errorf("Stale = %q, want %q", stale, want)
	}
	out.Reset()
	if err := Run(dir, &out, core.HandlerSpecs()); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "removed docs/handlers/gone.md\n"; got != want {
		t.Errorf("second run printed %q, want %q", got, want)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("a page relay docs did not write was removed: %v", err)
	}
	out.Reset()
	if err := Run(dir, &out, core.HandlerSpecs()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "already up to date") {
		t.Errorf("third run printed %q", out.String())
	}
}
