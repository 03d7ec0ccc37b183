package config

import (
	"fmt"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Fates of a message: what unmatched and on_error choose between.
const (
	FateForward = "forward"
	FateReject  = "reject"
	FateDrop    = "drop"
	FatePass    = "pass"
)

// Route sends the messages it matches through a chain of handlers.
type Route struct {
	Name     string          `yaml:"name" doc:"Name used in errors, logs and metrics. Default: the type pattern."`
	Match    Match           `yaml:"match" doc:"Which messages take this route; the first route that matches wins."`
	To       []string        `yaml:"to" doc:"Envs this route delivers to, replacing the default (every other env of the token). A message's own to still narrows it."`
	OnError  string          `yaml:"on_error" doc:"When a handler fails (times out, its endpoint is down, it returns a message larger than limits.max_frame_bytes; not when it rejects a message on purpose): reject (the sender gets relay.error handler_failed), pass (the message goes on as the handler got it) or drop." default:"reject"`
	Timeout  time.Duration   `yaml:"timeout" doc:"Longest one handler of this route may take for one message; past it the handler has failed." default:"5s"`
	Handlers []HandlerConfig `yaml:"handlers" doc:"The chain, run in order. Each entry names its handler and holds that handler's settings."`
}

// Match selects messages by type and sender.
type Match struct {
	Type string   `yaml:"type" doc:"Message type: exact (addMaterial) or a glob (material.*, *). Required."`
	From []string `yaml:"from" doc:"Sender envs. Empty: any."`
}

// Matches reports whether a message of type typ from env from takes this route.
func (m *Match) Matches(typ, from string) bool {
	if ok, _ := path.Match(m.Type, typ); !ok {
		return false
	}
	if len(m.From) == 0 {
		return true
	}
	for _, f := range m.From {
		if f == from {
			return true
		}
	}
	return false
}

// HandlerConfig is one entry of a route's handlers: `handler: NAME` plus
// that handler's own settings, which only the handler knows how to read.
// It keeps the YAML so that Decode can report problems with their lines.
type HandlerConfig struct {
	Handler string
	node    ast.Node
	file    string
	path    string // routes[1].handlers[0]
}

var handlerConfigType = reflect.TypeFor[HandlerConfig]()

// UnmarshalYAML keeps the entry's node for Decode.
func (h *HandlerConfig) UnmarshalYAML(n ast.Node) error {
	h.node = n
	pairs, _ := mappingPairs(n)
	for _, mv := range pairs {
		if keyText(mv.Key) == "handler" {
			if s, ok := mv.Value.(ast.ScalarNode); ok {
				h.Handler = fmt.Sprint(s.GetValue())
			}
		}
	}
	return nil
}

// Path is the entry's place in the file, for errors: relay.yaml:12 routes[1].handlers[0].
func (h *HandlerConfig) Path() string { return h.path }

// Where gives "file:line" of the entry, or the file alone for one built in code.
func (h *HandlerConfig) Where() string {
	if h.node == nil {
		return h.file
	}
	return fmt.Sprintf("%s:%d", h.file, h.Line())
}

// Decode strictly decodes the entry's settings (every key but handler)
// into v, a pointer to the handler's config struct holding its defaults.
// Unknown keys and wrong types are reported together, with file, line and
// path.
func (h *HandlerConfig) Decode(v any) error {
	if h.node == nil {
		return nil
	}
	t := reflect.TypeOf(v).Elem()
	ck := newChecker(h.file, nil)
	pairs, _ := mappingPairs(h.node)
	var rest []*ast.MappingValueNode
	fields := yamlFields(t)
	seen := map[string]int{}
	for _, mv := range pairs {
		key, line := keyText(mv.Key), mv.Key.GetToken().Position.Line
		if key == "handler" {
			continue
		}
		p := join(h.path, key)
		if first, dup := seen[key]; dup {
			ck.add(line, p, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[key] = line
		elem := fields[key]
		switch {
		case elem == nil && len(fields) == 0:
			ck.add(line, p, "unknown key: handler %s takes no settings", h.Handler)
			continue
		case elem == nil:
			known := sortedKeys(fields)
			if near := nearest(key, known); near != "" {
				ck.add(line, p, "unknown key for handler %s (did you mean %s?)", h.Handler, near)
			} else {
				ck.add(line, p, "unknown key for handler %s (known: %s)", h.Handler, strings.Join(known, ", "))
			}
			continue
		}
		ck.check(mv.Value, elem, p, line)
		rest = append(rest, mv)
	}
	if len(ck.probs) > 0 {
		return ck.probs.orNil()
	}
	if len(rest) == 0 {
		return nil
	}
	body := &ast.MappingNode{BaseNode: &ast.BaseNode{}, Start: h.node.GetToken(), Values: rest}
	if err := yaml.NodeToValue(body, v, yaml.Strict()); err != nil {
		p := yamlProblem(err, h.file, "")
		p.Path = h.path
		return Problems{p}
	}
	return nil
}

// NewHandlerConfig builds an entry from a YAML snippet such as
// "handler: validate\nschema: {...}", for tests and tools; name is what
// errors call its file.
func NewHandlerConfig(snippet, name string) (HandlerConfig, error) {
	var h HandlerConfig
	f, err := parser.ParseBytes([]byte(snippet), 0)
	if err != nil {
		return h, Problems{yamlProblem(err, name, "invalid YAML: ")}
	}
	if len(f.Docs) == 0 || f.Docs[0].Body == nil {
		return h, Problems{{File: name, Message: "empty handler config"}}
	}
	_ = h.UnmarshalYAML(f.Docs[0].Body)
	h.file, h.path = name, "handler"
	if h.Handler == "" {
		return h, Problems{{File: name, Line: 1, Path: "handler", Message: "is required: the name of a handler"}}
	}
	return h, nil
}

func sortedKeys(m map[string]reflect.Type) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// locateHandlers tells each handler entry where it stands in the file.
func (c *Config) locateHandlers(file string) {
	for i := range c.Routes {
		for j := range c.Routes[i].Handlers {
			h := &c.Routes[i].Handlers[j]
			h.file = file
			h.path = fmt.Sprintf("routes[%d].handlers[%d]", i, j)
		}
	}
}

// dropFailedHandlers leaves out of a Config from ParseAll the handler
// entries that would only fail for a reason already reported: those that
// failed to decode (no handler name), and those of the plugin handler when
// an entry of plugins: has a problem and is the one they may name (a plugin
// without its command would fail to start).
func (c *Config) dropFailedHandlers(ck *checker, probs Problems) {
	broken := map[string]bool{} // plugins[i] with a problem
	for _, p := range probs {
		if rest, ok := strings.CutPrefix(p.Path, "plugins["); ok {
			broken["plugins["+rest[:strings.IndexByte(rest, ']')+1]] = true
		}
	}
	sound := map[string]bool{} // names of the plugins entries without a problem
	for i, pl := range c.Plugins {
		if !broken[index("plugins", i)] {
			sound[pl.Name] = true
		}
	}
	brokenPlugins := len(broken) > 0 || ck.hasFailed("plugins")
	for i := range c.Routes {
		r := &c.Routes[i]
		r.Handlers = slices.DeleteFunc(r.Handlers, func(h HandlerConfig) bool {
			if ck.hasFailed(h.path) {
				return true
			}
			return brokenPlugins && h.Handler == "plugin" && !sound[h.setting("plugin")]
		})
	}
}

// DropUnknownHandlers reports every handler entry whose handler is not one
// of known (the registered names), with the nearest known name when one is
// close, and leaves those entries out of their routes, so that building the
// routes reports only the problems of the others.
func (c *Config) DropUnknownHandlers(known []string) Problems {
	var probs Problems
	for i := range c.Routes {
		r := &c.Routes[i]
		r.Handlers = slices.DeleteFunc(r.Handlers, func(h HandlerConfig) bool {
			if slices.Contains(known, h.Handler) {
				return false
			}
			msg := fmt.Sprintf("unknown handler %q (relay handlers lists them)", h.Handler)
			if near := nearest(h.Handler, known); near != "" {
				msg = fmt.Sprintf("unknown handler %q (did you mean %s?)", h.Handler, near)
			}
			probs = append(probs, Problem{File: h.file, Line: h.keyLine("handler"), Path: join(h.path, "handler"), Message: msg})
			return true
		})
	}
	return probs
}

// keyLine is the line of one of the entry's keys, or of the entry when it
// does not have that key or was built in code (0).
func (h *HandlerConfig) keyLine(key string) int {
	if h.node == nil {
		return 0
	}
	pairs, _ := mappingPairs(h.node)
	for _, mv := range pairs {
		if keyText(mv.Key) == key {
			return mv.Key.GetToken().Position.Line
		}
	}
	return h.Line()
}

// Line is the line of the entry in its file, 0 for one built in code.
func (h *HandlerConfig) Line() int {
	if h.node == nil {
		return 0
	}
	return h.node.GetToken().Position.Line
}

// File is the name of the entry's file, as given to Parse.
func (h *HandlerConfig) File() string { return h.file }

// setting is the text of one of the entry's settings, "" when it has none.
func (h *HandlerConfig) setting(key string) string {
	pairs, _ := mappingPairs(h.node)
	for _, mv := range pairs {
		if keyText(mv.Key) == key {
			if s, ok := mv.Value.(ast.ScalarNode); ok {
				return fmt.Sprint(s.GetValue())
			}
		}
	}
	return ""
}

// RouteName is the route's name, or its type pattern when it has none.
func (r *Route) RouteName() string {
	if r.Name != "" {
		return r.Name
	}
	return r.Match.Type
}
