package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/expr-lang/expr"

	"github.com/pairrelay/relay/config"
	"github.com/pairrelay/relay/core"
)

func init() {
	core.RegisterHandler(core.HandlerSpec{
		Name:    "transform",
		Summary: "Changes a message's type, to and data: renames and deletes keys of data, sets fields to the value of expressions.",
		New:     func() core.Handler { return &Transform{} },
	})
}

// Transform edits messages: rename, then delete, then set.
type Transform struct {
	Set    map[string]string `yaml:"set" doc:"Field path → expression whose value the field takes, e.g. data.receivedAt: now(), data.by: from, type: \"'material.added'\", to: \"['miniapp']\". Paths are type, to, data or data.KEY.KEY…; objects missing on the way are created. Every expression sees the message as rename and delete left it; the values are then stored in order of path. type must get a non-empty string, to a list of env names (or nil: every other env). Expressions (expr-lang) see type, data, from, to, id, ts (ms since epoch), claims, now() (ms since epoch) and uuid(), as filter's do. In YAML, quote an expression holding a string literal: type: \"'material.added'\"."`
	Rename map[string]string `yaml:"rename" doc:"Path within data → new path within data, e.g. data.title: data.name; applied one after another in order of the old path. A missing key is left alone."`
	Delete []string          `yaml:"delete" doc:"Paths to remove: data.KEY…, data (the message then has no data) or to (back to every other env). A missing key is left alone."`

	sets     []setOp
	renames  [][2]fieldPath
	deletes  []fieldPath
	needData bool // data must be decoded: an edit touches it or an expression reads it
	// appendOnly: the transform only sets top-level keys of data from
	// expressions that do not read data, the common "stamp" case, which
	// can be done on the raw JSON without decoding and re-encoding it.
	appendOnly bool
}

type setOp struct {
	path fieldPath
	prog *program
	key  []byte // appendOnly: the top-level key as JSON, quoted
}

// Provision parses the paths and compiles the expressions.
func (t *Transform) Provision(context.Context, core.ProvisionEnv) error {
	var errs []error
	for _, from := range sortedKeys(t.Rename) {
		to := t.Rename[from]
		pf, err := parsePath(from)
		if err == nil && (pf.kind != pathData || len(pf.keys) == 0) {
			err = fmt.Errorf("path %q: rename works within data: write data.KEY", from)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rename: %v", err))
			continue
		}
		pt, err := parsePath(to)
		if err == nil && (pt.kind != pathData || len(pt.keys) == 0) {
			err = fmt.Errorf("path %q: rename works within data: write data.KEY", to)
		}
		if err == nil && (isPrefix(pf.keys, pt.keys) || isPrefix(pt.keys, pf.keys)) {
			err = fmt.Errorf("cannot rename %s to %s, inside itself", from, to)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rename %s: %v", from, err))
			continue
		}
		t.renames = append(t.renames, [2]fieldPath{pf, pt})
		t.needData = true
	}
	for i, s := range t.Delete {
		p, err := parsePath(s)
		if err == nil && p.kind == pathType {
			err = errors.New("type cannot be deleted")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("delete[%d]: %v", i, err))
			continue
		}
		t.deletes = append(t.deletes, p)
		if p.kind == pathData && len(p.keys) > 0 {
			t.needData = true
		}
	}
	for _, key := range sortedKeys(t.Set) {
		p, err := parsePath(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("set: %v", err))
			continue
		}
		var opts []expr.Option
		if p.kind == pathType {
			opts = append(opts, expr.AsKind(reflect.String))
		}
		prog, err := compileExpr(t.Set[key], opts...)
		if err != nil {
			errs = append(errs, exprError("set "+key, err))
			continue
		}
		t.sets = append(t.sets, setOp{path: p, prog: prog})
		if prog.usesData || p.kind == pathData && len(p.keys) > 0 {
			t.needData = true
		}
	}
	t.appendOnly = len(t.renames) == 0 && len(t.deletes) == 0 && len(t.sets) > 0
	for i, op := range t.sets {
		if op.prog.usesData || op.path.kind != pathData || len(op.path.keys) != 1 {
			t.appendOnly = false
			continue
		}
		t.sets[i].key = appendJSONString(nil, op.path.keys[0])
	}
	if len(errs) == 0 && len(t.sets)+len(t.renames)+len(t.deletes) == 0 {
		errs = append(errs, errors.New("nothing to do: give set, rename or delete"))
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func isPrefix(prefix, keys []string) bool {
	return len(prefix) <= len(keys) && slices.Equal(prefix, keys[:len(prefix)])
}

// Handle edits the message. It changes m only once every step succeeded.
func (t *Transform) Handle(_ context.Context, m *core.Message) ([]*core.Message, error) {
	if t.appendOnly {
		if data, ok, err := t.appendKeys(m); err != nil {
			return nil, err
		} else if ok {
			m.Data = data
			return []*core.Message{m}, nil
		}
	}
	var env exprEnv
	if err := newEnv(&env, m, t.needData); err != nil {
		return nil, err
	}
	data, hasData := env.Data, m.Data != nil
	typ, to, dataChanged := m.Type, m.To, false
	for _, r := range t.renames {
		if v, ok := r[0].take(data); ok {
			if err := r[1].put(&data, v); err != nil {
				return nil, fmt.Errorf("rename %s: %v", r[0].text, err)
			}
			dataChanged = true
		}
	}
	for _, p := range t.deletes {
		switch {
		case p.kind == pathTo:
			to = nil
		case len(p.keys) == 0:
			data, hasData, dataChanged = nil, false, true
		default:
			if _, ok := p.take(data); ok {
				dataChanged = true
			}
		}
	}
	if len(t.sets) > 0 {
		env.Data = data
		values := make([]any, len(t.sets))
		for i, s := range t.sets {
			v, err := s.prog.run(&env)
			if err != nil {
				return nil, fmt.Errorf("set %s: %v", s.path.text, err)
			}
			if s.prog.usesData {
				v = deepCopy(v)
			}
			values[i] = v
		}
		for i, s := range t.sets {
			v := values[i]
			switch s.path.kind {
			case pathType:
				str, _ := v.(string)
				if str == "" || strings.HasPrefix(str, "relay.") {
					return nil, fmt.Errorf("set type: got %s, want a non-empty type not starting with relay.", describeValue(v))
				}
				typ = str
			case pathTo:
				envs, err := toEnvs(v)
				if err != nil {
					return nil, fmt.Errorf("set to: %v", err)
				}
				to = envs
			case pathData:
				if err := s.path.put(&data, v); err != nil {
					return nil, err
				}
				hasData, dataChanged = true, true
			}
		}
	}
	if dataChanged {
		if hasData {
			b, err := encodeData(data)
			if err != nil {
				return nil, err
			}
			m.Data = b
		} else {
			m.Data = nil
		}
	}
	m.Type, m.To = typ, to
	return []*core.Message{m}, nil
}

// toEnvs checks the value of a to expression: nil or a list of env names.
func toEnvs(v any) ([]string, error) {
	var envs []string
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []string:
		envs = slices.Clone(x)
	case []any:
		envs = make([]string, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("item %d is %s, want an env name", i, describeValue(e))
			}
			envs[i] = s
		}
	case string:
		return nil, fmt.Errorf("got the string %q, want a list such as ['%s']", x, x)
	default:
		return nil, fmt.Errorf("got %s, want a list of env names", describeValue(v))
	}
	for _, e := range envs {
		if !config.ValidEnvName(e) {
			return nil, fmt.Errorf("%q is not an env name ([a-z0-9_-]{1,32})", e)
		}
	}
	return envs, nil
}

// describeValue names a value in an error, with the value itself when short.
func describeValue(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "…"
		}
		return "the string " + strconv.Quote(x)
	case nil:
		return "nil"
	}
	return jsonKind(v)
}

// appendKeys is Handle for an appendOnly transform: it adds the set keys
// to the end of a data object that has none of them yet, keeping the rest
// of its bytes. ok is false when that cannot be known cheaply (data is not
// an object, holds escapes, or may hold one of the keys already); Handle
// then takes the general path, which gives the same JSON value.
func (t *Transform) appendKeys(m *core.Message) (data []byte, ok bool, err error) {
	raw := bytes.TrimSpace(m.Data)
	if len(raw) < 2 || raw[0] != '{' || raw[len(raw)-1] != '}' || bytes.IndexByte(raw, '\\') >= 0 {
		return nil, false, nil
	}
	for _, op := range t.sets {
		if bytes.Contains(raw, op.key) {
			return nil, false, nil
		}
	}
	var env exprEnv
	if err := newEnv(&env, m, false); err != nil {
		return nil, false, err
	}
	out := make([]byte, 0, len(raw)+32*len(t.sets))
	out = append(out, raw[:len(raw)-1]...)
	empty := len(bytes.TrimSpace(raw[1:len(raw)-1])) == 0
	for i, op := range t.sets {
		v, err := op.prog.run(&env)
		if err != nil {
			return nil, false, fmt.Errorf("set %s: %v", op.path.text, err)
		}
		if !empty || i > 0 {
			out = append(out, ',')
		}
		out = append(out, op.key...)
		out = append(out, ':')
		if out, err = appendJSON(out, v); err != nil {
			return nil, false, fmt.Errorf("set %s: cannot encode the value: %v", op.path.text, err)
		}
	}
	return append(out, '}'), true, nil
}

// NonBlocking: Handle only computes; the host needs no timeout for it.
func (*Transform) NonBlocking() {}
