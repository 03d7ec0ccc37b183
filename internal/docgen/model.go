package docgen

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

var (
	durationType      = reflect.TypeFor[time.Duration]()
	handlerConfigType = reflect.TypeFor[config.HandlerConfig]()
)

// Setting is one key of relay.yaml or of a handler entry, read from a
// struct field and its yaml, doc and default tags.
type Setting struct {
	Key        string       // yaml key: max_frame_bytes
	Path       string       // full path: limits.max_frame_bytes, routes[].match.type, envs.<env>.wire
	Type       reflect.Type // the field's type, pointers removed
	Doc        string       // doc tag
	Default    string       // default tag as written, "" when HasDefault is false
	HasDefault bool
	Children   []*Setting // keys of a mapping: the struct's own, or those of a list's or map's struct elements
	field      []int      // index of the struct field
}

// Required reports whether the key must be set: its doc has a sentence
// starting with "Required" ("Required." or "Required, more than 0."), or it
// is a mapping holding a required key.
func (s *Setting) Required() bool {
	if requiredDoc.MatchString(s.Doc) {
		return true
	}
	if s.Type.Kind() == reflect.Struct {
		for _, c := range s.Children {
			if c.Required() {
				return true
			}
		}
	}
	return false
}

var requiredDoc = regexp.MustCompile(`(^|[.;]\s+)Required\b`)

// Alternative is the sibling key that may be set instead of this one, when
// the doc says "Set this or KEY.": one of the two is required, not both.
func (s *Setting) Alternative() string {
	if m := alternativeDoc.FindStringSubmatch(s.Doc); m != nil {
		return m[2]
	}
	return ""
}

var alternativeDoc = regexp.MustCompile(`(^|[.;]\s+)Set this or ([a-z][a-z0-9_]*)\.`)

// settings lists the keys of struct type t as relay's strict decoder knows
// them (config.HandlerConfig.Decode and Parse): every exported field, named
// by its yaml tag or else by its lower-cased name, except yaml:"-".
// prefix is the path of the mapping holding them.
func settings(t reflect.Type, prefix string) []*Setting {
	var out []*Setting
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		s := &Setting{Key: name, Path: joinPath(prefix, name), Type: ft, Doc: strings.TrimSpace(f.Tag.Get("doc")), field: f.Index}
		s.Default, s.HasDefault = f.Tag.Lookup("default")
		s.Children = children(s)
		out = append(out, s)
	}
	return out
}

// children lists the keys nested under s: a struct's fields, or those of
// the structs in a list (routes[].match) or a map (envs.<env>.wire).
func children(s *Setting) []*Setting {
	t := s.Type
	switch {
	case t == handlerConfigType || t == durationType:
		return nil
	case t.Kind() == reflect.Struct:
		return settings(t, s.Path)
	case t.Kind() == reflect.Slice && isStruct(t.Elem()) && t.Elem() != handlerConfigType:
		return settings(deref(t.Elem()), s.Path+"[]")
	case t.Kind() == reflect.Map && isStruct(t.Elem()):
		return settings(deref(t.Elem()), s.Path+".<"+singular(s.Key)+">")
	}
	return nil
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func isStruct(t reflect.Type) bool {
	t = deref(t)
	return t.Kind() == reflect.Struct && t != durationType
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// singular turns a plural key (envs) into the name of one element (env).
func singular(key string) string {
	switch {
	case strings.HasSuffix(key, "ies"):
		return strings.TrimSuffix(key, "ies") + "y"
	case strings.HasSuffix(key, "s") && !strings.HasSuffix(key, "ss"):
		return strings.TrimSuffix(key, "s")
	}
	return key
}

// walk calls fn for every setting in the tree, parents before children.
func walk(list []*Setting, fn func(*Setting)) {
	for _, s := range list {
		fn(s)
		walk(s.Children, fn)
	}
}

// typeWords names a setting's YAML type in plain words.
func typeWords(s *Setting) string {
	t := s.Type
	switch {
	case t == durationType:
		return "duration"
	case t == handlerConfigType:
		return "handler entry"
	case t.Kind() == reflect.Slice && t.Elem() == handlerConfigType:
		return "list of handler entries"
	case t.Kind() == reflect.Slice && isStruct(t.Elem()):
		return "list of " + s.Key
	case t.Kind() == reflect.Slice:
		return "list of " + plural(scalarWords(t.Elem()))
	case t.Kind() == reflect.Map && isStruct(t.Elem()):
		return "map of " + singular(s.Key) + " name → settings"
	case t.Kind() == reflect.Map:
		return "map of " + scalarWords(t.Key()) + " → " + scalarWords(t.Elem())
	case t.Kind() == reflect.Struct:
		return "mapping"
	}
	return scalarWords(t)
}

func scalarWords(t reflect.Type) string {
	t = deref(t)
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Bool:
		return "boolean"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() == reflect.Interface:
		return "any YAML/JSON value"
	case t.Kind() == reflect.Slice:
		return "list of " + plural(scalarWords(t.Elem()))
	case t.Kind() == reflect.Map:
		return "map of " + scalarWords(t.Key()) + " → " + scalarWords(t.Elem())
	}
	return "mapping"
}

func plural(words string) string {
	switch {
	case words == "any YAML/JSON value":
		return "YAML/JSON values"
	case strings.HasPrefix(words, "list of "), strings.HasPrefix(words, "map of "):
		return words[:strings.Index(words, " ")] + "s" + words[strings.Index(words, " "):]
	}
	return words + "s"
}

// defaultValue decodes the default tag into a value of the setting's type,
// as relay would decode it from relay.yaml; durations stay strings as
// written (10s), the way a JSON Schema default and a YAML example show them.
func defaultValue(s *Setting) (any, error) {
	if !s.HasDefault {
		return nil, nil
	}
	t := s.Type
	switch {
	case t == durationType:
		if _, err := time.ParseDuration(s.Default); err != nil {
			return nil, err
		}
		return s.Default, nil
	case t.Kind() == reflect.String:
		return s.Default, nil
	case t.Kind() == reflect.Bool:
		return strconv.ParseBool(s.Default)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return strconv.ParseInt(s.Default, 10, t.Bits())
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return strconv.ParseUint(s.Default, 10, t.Bits())
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return strconv.ParseFloat(s.Default, t.Bits())
	}
	v := reflect.New(t)
	if err := yaml.UnmarshalWithOptions([]byte(s.Default), v.Interface(), yaml.Strict()); err != nil {
		return nil, err
	}
	return v.Elem().Interface(), nil
}

// goValue is the default tag decoded into the field's Go type, to compare
// with what the code really starts from.
func goValue(s *Setting) (reflect.Value, error) {
	if s.Type == durationType {
		d, err := time.ParseDuration(s.Default)
		return reflect.ValueOf(d), err
	}
	v, err := defaultValue(s)
	if err != nil {
		return reflect.Value{}, err
	}
	rv := reflect.ValueOf(v)
	if !rv.Type().ConvertibleTo(s.Type) {
		return reflect.Value{}, fmt.Errorf("cannot hold a %s", s.Type)
	}
	return rv.Convert(s.Type), nil
}

// enumList matches a list of values such as "seed or v1" or "debug, info, warn or error".
var enumList = regexp.MustCompile(`^[a-z][a-z0-9_]*(, [a-z][a-z0-9_]*)* or [a-z][a-z0-9_]*$`)

// enumFromDoc finds the values a string setting takes when its doc spells
// them out as a list ending a sentence, such as "json (…) or text." or
// "What is checked: data (…) or message (…).". It returns nil unless the
// default, if there is one, is among them; an empty default (none set)
// joins the values, since leaving the key empty is always allowed.
func enumFromDoc(doc, def string, hasDefault bool) []string {
	plain := collapseSpace(dropParens(doc))
	for sentence := range strings.SplitSeq(plain, ". ") {
		sentence = strings.TrimSuffix(strings.TrimSpace(sentence), ".")
		if i := strings.LastIndex(sentence, ": "); i >= 0 {
			sentence = sentence[i+2:]
		}
		if !enumList.MatchString(sentence) {
			continue
		}
		head, last, _ := strings.Cut(sentence, " or ")
		values := append(strings.Split(head, ", "), last)
		switch {
		case !hasDefault || def == "":
			return append([]string{""}, values...)
		case contains(values, def):
			return values
		}
		return nil
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// dropParens removes parenthesised asides, nested ones too.
func dropParens(s string) string {
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func collapseSpace(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	for _, p := range []string{" ,", " .", " ;", " :"} {
		s = strings.ReplaceAll(s, p, p[1:])
	}
	return s
}

// Handler is a registered handler with its settings.
type Handler struct {
	Name     string
	Summary  string
	Settings []*Setting
}

// handlers reads every spec's settings from the struct New returns.
func handlers(specs []core.HandlerSpec) ([]Handler, error) {
	out := make([]Handler, 0, len(specs))
	for _, spec := range specs {
		h := spec.New()
		t := reflect.TypeOf(h)
		if t == nil || t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
			return nil, fmt.Errorf("handler %s: New must return a pointer to a struct, got %T", spec.Name, h)
		}
		out = append(out, Handler{Name: spec.Name, Summary: spec.Summary, Settings: settings(t.Elem(), "")})
	}
	return out, nil
}

// configSettings lists the keys of relay.yaml.
func configSettings() []*Setting { return settings(reflect.TypeFor[config.Config](), "") }
