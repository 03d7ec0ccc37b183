package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// checker walks the YAML tree beside the Config type before anything is
// decoded. goccy/go-yaml stops at the first error, picks a random one of
// several unknown keys, gives no line for a bad duration and truncates 1.5
// into an int without complaint; walking the tree ourselves reports every
// such problem at once, in file order, with its path. It also records the line
// of every key so that Validate's problems can point into the file, and the
// paths that failed, so that the later stages can run on what is sound
// without reporting the consequences of a value that was never read.
type checker struct {
	file   string
	probs  Problems
	lines  map[string]int  // YAML path -> line of its key
	failed map[string]bool // YAML paths whose value is not decoded
}

func newChecker(file string, probs Problems) *checker {
	return &checker{file: file, probs: probs, lines: map[string]int{}, failed: map[string]bool{}}
}

var durationType = reflect.TypeFor[time.Duration]()

// add records a problem with the value at path, which is then not decoded.
func (c *checker) add(line int, path, format string, args ...any) {
	c.note(line, path, format, args...)
	c.failed[path] = true
}

// note records a problem that leaves the value at path decoded.
func (c *checker) note(line int, path, format string, args ...any) {
	c.probs = append(c.probs, Problem{File: c.file, Line: line, Path: path, Message: fmt.Sprintf(format, args...)})
}

// hasFailed reports whether the value at path, or one that holds it, was not
// decoded: it keeps its default, so a rule about it would judge a value the
// file never set.
func (c *checker) hasFailed(path string) bool {
	for f := range c.failed {
		if f == "" || path == f || strings.HasPrefix(path, f+".") || strings.HasPrefix(path, f+"[") {
			return true
		}
	}
	return false
}

// check looks at n, the value at path whose key is on line, against the Go
// type t it will be decoded into. It returns what to decode in n's place: n
// when it is sound, a copy without the parts that are not, or nil when n
// itself is wrong, so that one decode reads every sound value and leaves the
// others at their defaults.
func (c *checker) check(n ast.Node, t reflect.Type, path string, line int) ast.Node {
	if a, ok := n.(*ast.AnchorNode); ok {
		v := c.check(a.Value, t, path, line)
		if v == nil || v == a.Value {
			return v
		}
		cp := *a // an alias may still refer to it
		cp.Value = v
		return &cp
	}
	switch n.(type) {
	case nil, *ast.NullNode:
		return n // keeps the default
	case *ast.AliasNode, *ast.TagNode:
		return n // rare in a config file; the decoder judges them
	}
	switch {
	case t == handlerConfigType:
		return c.checkHandlerEntry(n, path, line)
	case t == durationType:
		if s, ok := n.(*ast.StringNode); ok {
			if _, err := time.ParseDuration(s.Value); err == nil {
				return n
			}
		}
		c.add(line, path, "must be a duration such as 10s, 1m30s or 500ms, got %s", describe(n))
	case t.Kind() == reflect.Int:
		if c.checkInt(n, path, line) {
			return n
		}
	case t.Kind() == reflect.Float64:
		switch v := n.(type) {
		case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
			return n
		case *ast.StringNode:
			if _, err := strconv.ParseFloat(v.Value, 64); err == nil {
				return n
			}
		}
		c.add(line, path, "must be a number, got %s", describe(n))
	case t.Kind() == reflect.String:
		if _, ok := n.(ast.ScalarNode); ok {
			return n
		}
		c.add(line, path, "must be a single value, got %s", describe(n))
	case t.Kind() == reflect.Slice:
		return c.checkSequence(n, t, path, line)
	case t.Kind() == reflect.Map, t.Kind() == reflect.Struct:
		return c.checkMapping(n, t, path, line)
	default:
		return n
	}
	return nil
}

func (c *checker) checkInt(n ast.Node, path string, line int) bool {
	switch v := n.(type) {
	case *ast.IntegerNode:
		if u, ok := v.Value.(uint64); ok && u > math.MaxInt {
			c.add(line, path, "%s is too large", v.Token.Value)
			return false
		}
		return true
	case *ast.StringNode: // a quoted number ("${VAR}"), or one too large for the parser
		_, err := strconv.Atoi(v.Value)
		if err == nil {
			return true
		}
		if errors.Is(err, strconv.ErrRange) {
			c.add(line, path, "%s is too large", v.Value)
			return false
		}
	case *ast.FloatNode:
		c.add(line, path, "must be a whole number, got %s", describe(n))
		return false
	}
	c.add(line, path, "must be an integer, got %s", describe(n))
	return false
}

// checkSequence checks each element of a list. An element that is wrong
// becomes null rather than going away, so that the elements after it keep
// their index and problems found later name them as the file does.
func (c *checker) checkSequence(n ast.Node, t reflect.Type, path string, line int) ast.Node {
	seq, ok := n.(*ast.SequenceNode)
	if !ok {
		c.add(line, path, "must be a list, got %s", describe(n))
		return nil
	}
	var values []ast.Node // a copy, made at the first change
	for i, v := range seq.Values {
		p, l := index(path, i), v.GetToken().Position.Line
		c.lines[p] = l
		got := c.check(v, t.Elem(), p, l)
		if got == v {
			continue
		}
		if values == nil {
			values = slices.Clone(seq.Values)
		}
		if got == nil {
			got = ast.Null(token.New("null", "null", v.GetToken().Position))
		}
		values[i] = got
	}
	if values == nil {
		return n
	}
	cp := *seq
	cp.Values = values
	return &cp
}

// checkMapping checks a mapping decoded into a struct (known keys only) or a
// map (any key), rejecting duplicate keys, which YAML forbids. It returns the
// mapping without its wrong pairs, which then keep their defaults.
func (c *checker) checkMapping(n ast.Node, t reflect.Type, path string, line int) ast.Node {
	pairs, ok := mappingPairs(n)
	if !ok {
		c.add(line, path, "must be a mapping of keys to values, got %s", describe(n))
		return nil
	}
	var fields map[string]reflect.Type
	if t.Kind() == reflect.Struct {
		fields = yamlFields(t)
	}
	seen := map[string]int{}
	kept := make([]*ast.MappingValueNode, 0, len(pairs))
	changed := false
	keep := func(mv *ast.MappingValueNode, v ast.Node) {
		switch {
		case v == nil:
			changed = true
		case v == mv.Value:
			kept = append(kept, mv)
		default:
			cp := *mv
			cp.Value = v
			kept = append(kept, &cp)
			changed = true
		}
	}
	for _, mv := range pairs {
		if mv.Key.IsMergeKey() { // <<: merges a mapping (goccy takes no list here)
			keep(mv, c.check(mv.Value, t, path, mv.Key.GetToken().Position.Line))
			continue
		}
		key, kl := keyText(mv.Key), mv.Key.GetToken().Position.Line
		p := join(path, key)
		if first, dup := seen[key]; dup {
			// The first value is the one decoded; the rules still judge it.
			c.note(kl, p, "duplicate key (first set on line %d)", first)
			changed = true
			continue
		}
		seen[key] = kl
		var elem reflect.Type
		if fields == nil {
			elem = t.Elem()
		} else if elem = fields[key]; elem == nil {
			c.add(kl, p, "unknown key%s", didYouMean(key, slices.Collect(maps.Keys(fields))))
			changed = true
			continue
		}
		c.lines[p] = kl
		keep(mv, c.check(mv.Value, elem, p, kl))
	}
	if !changed {
		return n
	}
	m := &ast.MappingNode{BaseNode: &ast.BaseNode{}, Start: n.GetToken(), Values: kept}
	if orig, ok := n.(*ast.MappingNode); ok {
		cp := *orig
		cp.Values = kept
		m = &cp
	}
	return m
}

func mappingPairs(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{m}, true
	}
	return nil, false
}

func keyText(k ast.MapKeyNode) string {
	var n ast.Node = k
	if mk, ok := k.(*ast.MappingKeyNode); ok { // "? key" syntax
		n = mk.Value
	}
	if s, ok := n.(*ast.StringNode); ok {
		return s.Value
	}
	return n.GetToken().Value
}

// yamlFields maps the yaml names of t's fields to their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = f.Type
	}
	return fields
}

// describe names what the file holds, for "got ..." in a message.
func describe(n ast.Node) string {
	switch v := n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode:
		return strconv.Quote(v.Value)
	case *ast.LiteralNode:
		return "a block of text"
	}
	return n.GetToken().Value
}

// checkHandlerEntry checks what a route's handler entry must have; the
// handler's own settings are checked when the handler decodes them. An
// entry without a handler name is not built at all (see dropFailedHandlers).
func (c *checker) checkHandlerEntry(n ast.Node, path string, line int) ast.Node {
	pairs, ok := mappingPairs(n)
	if !ok {
		c.add(line, path, "must be a mapping with handler: NAME and that handler's settings, got %s", describe(n))
		return nil
	}
	for _, mv := range pairs {
		if keyText(mv.Key) != "handler" {
			continue
		}
		kl := mv.Key.GetToken().Position.Line
		c.lines[join(path, "handler")] = kl
		if s, ok := mv.Value.(*ast.StringNode); !ok || s.Value == "" {
			c.add(kl, join(path, "handler"), "must be the name of a handler, got %s", describe(mv.Value))
			c.failed[path] = true
			return nil
		}
		return n
	}
	// A misspelt handler: key is the likelier mistake than a missing one;
	// point at it.
	for _, mv := range pairs {
		if key := keyText(mv.Key); nearest(key, []string{"handler"}) != "" {
			c.add(mv.Key.GetToken().Position.Line, join(path, key), "unknown key (did you mean handler?)")
			c.failed[path] = true
			return nil
		}
	}
	c.add(line, join(path, "handler"), "is required: the name of a handler (relay handlers lists them)")
	c.failed[path] = true
	return nil
}
