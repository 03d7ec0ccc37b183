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
// Problems listing everything wrong that the stage it stopped at could see.
//
// Without a relay.yaml, Parse(nil, "") gives the defaults with PORT applied.
func Parse(src []byte, name string) (*Config, error) {
	text, probs := expand(src, name, os.LookupEnv)
	if len(probs) > 0 {
		return nil, probs.orNil() // the YAML is not what the user wrote
	}
	// Duplicate keys are left for the checker, which reports all of them.
	file, err := parser.ParseBytes(text, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		return nil, Problems{yamlProblem(err, name, "invalid YAML: ")}
	}
	body, probs := document(file, name)
	ck := checker{file: name, probs: probs, lines: map[string]int{}}
	if body != nil {
		ck.check(body, reflect.TypeFor[Config](), "", body.GetToken().Position.Line)
	}
	if len(ck.probs) > 0 {
		return nil, ck.probs.orNil()
	}

	cfg := Default()
	// goccy zeroes the target when the document is empty, so only decode a body.
	if body != nil {
		if err := yaml.NodeToValue(body, cfg, yaml.Strict()); err != nil {
			return nil, Problems{yamlProblem(err, name, "")}
		}
	}
	cfg.locateHandlers(name)
	cfg.applyRouteDefaults()
	probs = cfg.applyPort(os.Getenv("PORT"))
	for _, p := range cfg.problems() {
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
	if err := probs.orNil(); err != nil {
		return nil, err
	}
	return cfg, nil
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
