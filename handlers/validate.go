package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/pairrelay/relay/core"
)

func init() {
	core.RegisterHandler(core.HandlerSpec{
		Name:    "validate",
		Summary: "Checks messages against a JSON Schema (draft 2020-12) and rejects those that do not match with invalid_message.",
		New:     func() core.Handler { return &Validate{Target: targetData} },
	})
}

// Validate rejects messages that do not match a JSON Schema.
type Validate struct {
	Schema     any    `yaml:"schema" doc:"The JSON Schema (draft 2020-12), written inline in YAML or JSON. Set this or schema_file."`
	SchemaFile string `yaml:"schema_file" doc:"Path of a JSON (or .yaml/.yml) file holding the schema, relative to relay.yaml's directory; a relative $ref in it resolves against the file. Set this or schema."`
	Target     string `yaml:"target" doc:"What is checked: data (the message's data; absent data is null) or message (an object with type, from and, when present, data, to and id)." default:"data"`

	schema *jsonschema.Schema
	quick  *quickSchema // nil: the schema is outside the quick subset
}

const (
	targetData    = "data"
	targetMessage = "message"
	maxIssues     = 5 // reported per rejected message
)

// Provision loads and compiles the schema; formats (email, date-time, …)
// are asserted.
func (v *Validate) Provision(_ context.Context, env core.ProvisionEnv) error {
	if v.Target != targetData && v.Target != targetMessage {
		return fmt.Errorf("target: must be data or message, got %q", v.Target)
	}
	hasInline := v.Schema != nil
	switch {
	case hasInline && v.SchemaFile != "":
		return errors.New("set schema or schema_file, not both")
	case !hasInline && v.SchemaFile == "":
		return errors.New("needs schema (inline) or schema_file")
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	var loc, setting string
	var doc any
	if hasInline {
		var err error
		doc, err = toJSONValue(v.Schema)
		if err != nil {
			return fmt.Errorf("schema: %v", err)
		}
		// Inline schemas live beside relay.yaml, so that a relative $ref reads a file there.
		base, err := filepath.Abs(env.BaseDir)
		if err != nil {
			return err
		}
		loc, setting = filepath.Join(base, "relay-inline-schema.json"), "schema"
		if err := c.AddResource(loc, doc); err != nil {
			return fmt.Errorf("schema: %v", err)
		}
	} else {
		path := v.SchemaFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(env.BaseDir, path)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		doc, err = readSchemaFile(path)
		if err != nil {
			return fmt.Errorf("schema_file: %v", err)
		}
		loc, setting = abs, "schema_file"
		if err := c.AddResource(loc, doc); err != nil {
			return fmt.Errorf("schema_file: %v", err)
		}
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return fmt.Errorf("%s: %s", setting, schemaError(err, doc))
	}
	v.schema = sch
	if v.Target == targetData {
		v.quick = compileQuick(sch)
	}
	return nil
}

// readSchemaFile reads a schema as JSON, or as YAML for .yaml and .yml.
func readSchemaFile(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var perr *fs.PathError
		if errors.As(err, &perr) {
			err = perr.Err
		}
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		var doc any
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("%s: %v", filepath.Base(path), err)
		}
		return toJSONValue(doc)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", filepath.Base(path), err)
	}
	return doc, nil
}

// toJSONValue turns a YAML-decoded value into the JSON value the schema
// compiler takes (string keys, json.Number numbers).
func toJSONValue(v any) (any, error) {
	b, err := json.Marshal(stringKeys(v))
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

func stringKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = stringKeys(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = stringKeys(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = stringKeys(e)
		}
		return out
	}
	return v
}

// schemaError words a compile error without the schema's absolute location.
func schemaError(err error, doc any) string {
	var lerr *jsonschema.LoadURLError
	if errors.As(err, &lerr) {
		return fmt.Sprintf("cannot load %s: relay reads only local schema files, by a path relative to the schema (%v)", lerr.URL, lerr.Err)
	}
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		var ve *jsonschema.ValidationError
		if errors.As(sve.Err, &ve) {
			return "not a valid JSON Schema (draft 2020-12): " + strings.Join(issues(ve, "schema", doc, 0), "; ")
		}
	}
	return err.Error()
}

// Handle passes messages that match the schema and rejects the others.
func (v *Validate) Handle(_ context.Context, m *core.Message) ([]*core.Message, error) {
	if v.quick != nil && v.quick.check(m.Data) == valid {
		return []*core.Message{m}, nil
	}
	var data any
	if len(m.Data) > 0 {
		var err error
		if data, err = jsonschema.UnmarshalJSON(bytes.NewReader(m.Data)); err != nil {
			return nil, fmt.Errorf("data is not valid JSON: %v", err)
		}
	}
	inst, root := data, "data"
	if v.Target == targetMessage {
		obj := map[string]any{"type": m.Type, "from": m.From}
		if m.Data != nil {
			obj["data"] = data
		}
		if m.To != nil {
			to := make([]any, len(m.To))
			for i, e := range m.To {
				to[i] = e
			}
			obj["to"] = to
		}
		if m.ID != "" {
			obj["id"] = m.ID
		}
		inst, root = obj, "message"
	}
	err := v.schema.Validate(inst)
	if err == nil {
		return []*core.Message{m}, nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return nil, err
	}
	return nil, core.Reject(core.ErrInvalidMessage, "%s", strings.Join(issues(ve, root, inst, maxIssues), "; "))
}

// issues lists what is wrong, one "path: problem" per failing leaf, at most
// limit (0: all) plus a count of the rest.
func issues(ve *jsonschema.ValidationError, root string, inst any, limit int) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		at := instancePath(root, inst, e.InstanceLocation)
		for _, s := range describeIssue(at, e.ErrorKind) {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	walk(ve)
	slices.Sort(out) // the validator walks objects in map order
	if len(out) == 0 {
		out = append(out, root+": does not match the schema")
	}
	if limit > 0 && len(out) > limit {
		out = append(out[:limit], fmt.Sprintf("and %d more", len(out)-limit))
	}
	return out
}

// describeIssue words one failure; some kinds read better per property.
func describeIssue(at string, k jsonschema.ErrorKind) []string {
	switch k := k.(type) {
	case *kind.Required:
		out := make([]string, len(k.Missing))
		for i, name := range k.Missing {
			out[i] = childPath(at, name) + ": missing property"
		}
		return out
	case *kind.AdditionalProperties:
		out := make([]string, len(k.Properties))
		for i, name := range k.Properties {
			out[i] = childPath(at, name) + ": property not allowed"
		}
		return out
	case *kind.Type:
		return []string{at + ": must be " + strings.Join(k.Want, " or ") + ", got " + k.Got}
	case *kind.FalseSchema:
		return []string{at + ": not allowed"}
	case *kind.Minimum:
		return []string{fmt.Sprintf("%s: must be >= %s, got %s", at, k.Want.RatString(), k.Got.RatString())}
	case *kind.Maximum:
		return []string{fmt.Sprintf("%s: must be <= %s, got %s", at, k.Want.RatString(), k.Got.RatString())}
	case *kind.ExclusiveMinimum:
		return []string{fmt.Sprintf("%s: must be > %s, got %s", at, k.Want.RatString(), k.Got.RatString())}
	case *kind.ExclusiveMaximum:
		return []string{fmt.Sprintf("%s: must be < %s, got %s", at, k.Want.RatString(), k.Got.RatString())}
	case *kind.MinLength:
		return []string{fmt.Sprintf("%s: must be at least %d characters long, got %d", at, k.Want, k.Got)}
	case *kind.MaxLength:
		return []string{fmt.Sprintf("%s: must be at most %d characters long, got %d", at, k.Want, k.Got)}
	case *kind.MinItems:
		return []string{fmt.Sprintf("%s: must have at least %d items, got %d", at, k.Want, k.Got)}
	case *kind.MaxItems:
		return []string{fmt.Sprintf("%s: must have at most %d items, got %d", at, k.Want, k.Got)}
	}
	return []string{at + ": " + k.LocalizedString(english)}
}

var english = message.NewPrinter(language.English)

var plainKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// instancePath writes a JSON location as data.items[2].name, telling array
// indexes from object keys by walking the instance.
func instancePath(root string, inst any, loc []string) string {
	var b strings.Builder
	b.WriteString(root)
	cur := inst
	for _, tok := range loc {
		if arr, ok := cur.([]any); ok {
			if i, err := strconv.Atoi(tok); err == nil && i >= 0 && i < len(arr) {
				b.WriteString("[" + tok + "]")
				cur = arr[i]
				continue
			}
		}
		b.WriteString(childPath("", tok))
		if obj, ok := cur.(map[string]any); ok {
			cur = obj[tok]
		} else {
			cur = nil
		}
	}
	return b.String()
}

func childPath(parent, key string) string {
	if plainKey.MatchString(key) {
		return parent + "." + key
	}
	return parent + "[" + strconv.Quote(key) + "]"
}

// NonBlocking: Handle only computes; the host needs no timeout for it.
func (*Validate) NonBlocking() {}
