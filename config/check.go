package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// checker walks the YAML tree beside the Config type before anything is
// decoded. goccy/go-yaml stops at the first error, picks a random one of
// several unknown keys, gives no line for a bad duration and truncates 1.5
// into an int without complaint; walking the tree ourselves reports every
// such problem at once, in file order, with its path. It also records the line
// of every key so that Validate's problems can point into the file.
type checker struct {
	file  string
	probs Problems
	lines map[string]int // YAML path -> line of its key
}

var durationType = reflect.TypeFor[time.Duration]()

func (c *checker) add(line int, path, format string, args ...any) {
	c.probs = append(c.probs, Problem{File: c.file, Line: line, Path: path, Message: fmt.Sprintf(format, args...)})
}

// check looks at n, the value at path whose key is on line, against the Go
// type t it will be decoded into.
func (c *checker) check(n ast.Node, t reflect.Type, path string, line int) {
	if a, ok := n.(*ast.AnchorNode); ok {
		n = a.Value
	}
	switch n.(type) {
	case nil, *ast.NullNode:
		return // keeps the default
	case *ast.AliasNode, *ast.TagNode:
		return // rare in a config file; the decoder judges them
	}
	switch {
	case t == handlerConfigType:
		c.checkHandlerEntry(n, path, line)
	case t == durationType:
		if s, ok := n.(*ast.StringNode); ok {
			if _, err := time.ParseDuration(s.Value); err == nil {
				return
			}
		}
		c.add(line, path, "must be a duration such as 10s, 1m30s or 500ms, got %s", describe(n))
	case t.Kind() == reflect.Int:
		c.checkInt(n, path, line)
	case t.Kind() == reflect.Float64:
		switch v := n.(type) {
		case *ast.IntegerNode, *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
			return
		case *ast.StringNode:
			if _, err := strconv.ParseFloat(v.Value, 64); err == nil {
				return
			}
		}
		c.add(line, path, "must be a number, got %s", describe(n))
	case t.Kind() == reflect.String:
		if _, ok := n.(ast.ScalarNode); !ok {
			c.add(line, path, "must be a single value, got %s", describe(n))
		}
	case t.Kind() == reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			c.add(line, path, "must be a list, got %s", describe(n))
			return
		}
		for i, v := range seq.Values {
			p, l := index(path, i), v.GetToken().Position.Line
			c.lines[p] = l
			c.check(v, t.Elem(), p, l)
		}
	case t.Kind() == reflect.Map, t.Kind() == reflect.Struct:
		c.checkMapping(n, t, path, line)
	}
}

func (c *checker) checkInt(n ast.Node, path string, line int) {
	switch v := n.(type) {
	case *ast.IntegerNode:
		if u, ok := v.Value.(uint64); ok && u > math.MaxInt {
			c.add(line, path, "%s is too large", v.Token.Value)
		}
		return
	case *ast.StringNode: // a quoted number ("${VAR}"), or one too large for the parser
		_, err := strconv.Atoi(v.Value)
		if err == nil {
			return
		}
		if errors.Is(err, strconv.ErrRange) {
			c.add(line, path, "%s is too large", v.Value)
			return
		}
	case *ast.FloatNode:
		c.add(line, path, "must be a whole number, got %s", describe(n))
		return
	}
	c.add(line, path, "must be an integer, got %s", describe(n))
}

// checkMapping checks a mapping decoded into a struct (known keys only) or a
// map (any key), rejecting duplicate keys, which YAML forbids.
func (c *checker) checkMapping(n ast.Node, t reflect.Type, path string, line int) {
	pairs, ok := mappingPairs(n)
	if !ok {
		c.add(line, path, "must be a mapping of keys to values, got %s", describe(n))
		return
	}
	var fields map[string]reflect.Type
	if t.Kind() == reflect.Struct {
		fields = yamlFields(t)
	}
	seen := map[string]int{}
	for _, mv := range pairs {
		if mv.Key.IsMergeKey() { // <<: merges a mapping (goccy takes no list here)
			c.check(mv.Value, t, path, mv.Key.GetToken().Position.Line)
			continue
		}
		key, kl := keyText(mv.Key), mv.Key.GetToken().Position.Line
		p := join(path, key)
		if first, dup := seen[key]; dup {
			c.add(kl, p, "duplicate key (first set on line %d)", first)
			continue
		}
		seen[key] = kl
		var elem reflect.Type
		if fields == nil {
			elem = t.Elem()
		} else if elem = fields[key]; elem == nil {
			c.add(kl, p, "unknown key")
			continue
		}
		c.lines[p] = kl
		c.check(mv.Value, elem, p, kl)
	}
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
// handler's own settings are checked when the handler decodes them.
func (c *checker) checkHandlerEntry(n ast.Node, path string, line int) {
	pairs, ok := mappingPairs(n)
	if !ok {
		c.add(line, path, "must be a mapping with handler: NAME and that handler's settings, got %s", describe(n))
		return
	}
	for _, mv := range pairs {
		if keyText(mv.Key) != "handler" {
			continue
		}
		kl := mv.Key.GetToken().Position.Line
		c.lines[join(path, "handler")] = kl
		if s, ok := mv.Value.(*ast.StringNode); !ok || s.Value == "" {
			c.add(kl, join(path, "handler"), "must be the name of a handler, got %s", describe(mv.Value))
		}
		return
	}
	c.add(line, join(path, "handler"), "is required: the name of a handler (relay handlers lists them)")
}
