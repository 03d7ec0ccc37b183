package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Load reads the relay.yaml at path and parses it with Parse. A missing file
// gives an error that matches fs.ErrNotExist.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(src, path)
}

// Parse turns the text of a relay.yaml into a valid Config: it expands
// ${VAR} and ${VAR:default}, decodes strictly over Default() (an empty file
// gives the defaults), lets a non-empty PORT replace the port of listen, and
// validates. name is the file name used in problems. Any failure is a
// Problems listing everything wrong in the file (see ParseAll).
//
// Without a relay.yaml, Parse(nil, "") gives the defaults with PORT applied.
func Parse(src []byte, name string) (*Config, error) {
	cfg, probs := ParseAll(src, name)
	if err := probs.orNil(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// LoadAll reads the relay.yaml at path and parses it with ParseAll; err is
// only for a file that cannot be read, and matches fs.ErrNotExist for a
// missing one.
func LoadAll(path string) (cfg *Config, probs Problems, err error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	cfg, probs = ParseAll(src, path)
	return cfg, probs, nil
}

// ParseAll is Parse that does not stop at a failing stage: it returns every
// problem of the file (values of the wrong type, unknown and duplicate keys,
// values the rules refuse) together with the Config as far as it could be
// read, so that a caller can go on to build the handlers and report their
// problems in the same run. A value that failed to decode keeps its default
// and no rule judges it; a handler entry without a handler name is left out
// of its route, and so are the plugin handlers when an entry of plugins: has
// a problem. Such a Config is for finding problems, never for serving.
//
// The Config is nil only when the text is not YAML that can be read at all:
// a ${VAR} that is not set (the YAML is then not what the user wrote), a
// syntax error, or a value the decoder refuses that the checks before it
// did not foresee.
func ParseAll(src []byte, name string) (*Config, Problems) {
	text, subs, probs := expandRefs(src, name, os.LookupEnv)
	if len(probs) > 0 {
		return nil, probs.sorted()
	}
	cfg, probs := parseExpanded(text, name)
	return cfg, redact(probs, subs)
}

// parseExpanded is ParseAll after ${VAR} expansion.
func parseExpanded(text []byte, name string) (*Config, Problems) {
	// Duplicate keys are left for the checker, which reports all of them.
	file, err := parser.ParseBytes(text, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		return nil, Problems{yamlProblem(err, name, "invalid YAML: ")}
	}
	body, probs := document(file, name)
	ck := newChecker(name, probs)
	if body != nil {
		body = ck.check(body, reflect.TypeFor[Config](), "", body.GetToken().Position.Line)
	}

	cfg := Default()
	// goccy zeroes the target when the document is empty, so only decode a body.
	if body != nil {
		if err := yaml.NodeToValue(body, cfg, yaml.Strict()); err != nil {
			return nil, append(ck.probs, yamlProblem(err, name, "")).sorted()
		}
	}
	cfg.locateHandlers(name)
	cfg.applyRouteDefaults()
	// A default per-token bound follows a frame size larger than it, so
	// that a file written before the bound existed stays valid.
	if ck.lines["history.max_token_bytes"] == 0 && cfg.History.MaxTokenBytes < int64(cfg.Limits.MaxFrameBytes) {
		cfg.History.MaxTokenBytes = int64(cfg.Limits.MaxFrameBytes)
	}
	probs = append(ck.probs, cfg.applyPort(os.Getenv("PORT"))...)
	for _, p := range cfg.problems() {
		if ck.hasFailed(p.Path) || related[p.Path] != "" && ck.hasFailed(related[p.Path]) {
			continue // about a default standing in for a value that failed
		}
		p.File = name
		if p.Line = ck.lines[p.Path]; p.Line == 0 {
			p.Line = ck.lines[related[p.Path]]
		}
		// A required key that is missing: point at the entry that lacks it.
		for parent := p.Path; p.Line == 0 && strings.Contains(parent, "["); {
			parent = parent[:strings.LastIndexAny(parent, ".[")]
			p.Line = ck.lines[parent]
		}
		probs = append(probs, p)
	}
	cfg.dropFailedHandlers(ck, probs)
	return cfg, probs.sorted()
}

// document returns the body of the file's only document, nil when it has none.
func document(file *ast.File, name string) (ast.Node, Problems) {
	var body ast.Node
	var probs Problems
	for _, doc := range file.Docs {
		switch {
		case doc.Body == nil:
		case body == nil:
			body = doc.Body
		default:
			line := doc.Body.GetToken().Position.Line
			if doc.Start != nil {
				line = doc.Start.Position.Line
			}
			probs = append(probs, Problem{File: name, Line: line, Message: "a second YAML document; the file must hold only one"})
		}
	}
	return body, probs
}

// yamlProblem turns a goccy/go-yaml error into a one-line Problem. Its
// Error() is a multi-line snippet with a caret; the line is all we need.
func yamlProblem(err error, name, prefix string) Problem {
	var ye yaml.Error
	if !errors.As(err, &ye) {
		return Problem{File: name, Message: prefix + err.Error()}
	}
	p := Problem{File: name, Message: prefix + ye.GetMessage()}
	if tk := ye.GetToken(); tk != nil {
		p.Line = tk.Position.Line
	}
	return p
}

// applyPort lets the PORT environment variable, which platforms such as Cloud
// Run set, replace the port of Listen while keeping its host.
func (c *Config) applyPort(port string) Problems {
	if port == "" {
		return nil
	}
	if !validPort(port, 1) {
		return Problems{{Message: fmt.Sprintf("environment variable PORT=%q is not a port number (1-65535)", port)}}
	}
	if host, _, err := net.SplitHostPort(c.Listen); err == nil {
		c.Listen = net.JoinHostPort(host, port)
	}
	return nil
}
