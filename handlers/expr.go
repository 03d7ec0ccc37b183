package handlers

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/pairrelay/relay/core"
)

// exprEnv is what filter and transform expressions see of a message. The
// token is deliberately absent; seq is not assigned yet when handlers run.
type exprEnv struct {
	Type string   `expr:"type"`
	Data any      `expr:"data"` // decoded JSON: objects, arrays, strings, int or float64 numbers, bools, nil
	From string   `expr:"from"`
	To   []string `expr:"to"`
	ID   string   `expr:"id"`
	TS   int64    `expr:"ts"`
	// Claims is the sender's identity that auth lets handlers see; nil
	// without auth.
	Claims map[string]any `expr:"claims"`
}

// program is a compiled expression with a pool of VMs to run it.
type program struct {
	src      string
	prog     *vm.Program
	usesData bool // the expression reads data, so the message's data must be decoded
	vms      sync.Pool
	// direct computes the commonest expressions, now() and a field such as
	// from, without the VM; nil for any other expression.
	direct func(env *exprEnv) any
}

// compileExpr compiles src against exprEnv; unknown names and fields of
// known types are errors here rather than on the first message.
func compileExpr(src string, opts ...expr.Option) (*program, error) {
	all := append([]expr.Option{
		expr.Env(&exprEnv{}),
		expr.DisableBuiltin("now"), // the builtin gives a time.Time; ours gives ms, like ts
		expr.Function("now", func(...any) (any, error) { return nowMillis(), nil }, new(func() int64)),
		expr.Function("uuid", func(...any) (any, error) { return newUUID(), nil }, new(func() string)),
	}, opts...)
	p, err := expr.Compile(src, all...)
	if err != nil {
		return nil, err
	}
	root := p.Node()
	var v dataVisitor
	ast.Walk(&root, &v)
	pr := &program{src: src, prog: p, usesData: v.found, direct: directExpr(root)}
	pr.vms.New = func() any { return new(vm.VM) }
	return pr, nil
}

// directExpr returns how to compute the expression of root without the VM
// when it is a call of now() or uuid() or one field of the message.
func directExpr(root ast.Node) func(env *exprEnv) any {
	switch n := root.(type) {
	case *ast.CallNode:
		callee, ok := n.Callee.(*ast.IdentifierNode)
		if !ok || len(n.Arguments) > 0 {
			return nil
		}
		switch callee.Value {
		case "now":
			return func(*exprEnv) any { return nowMillis() }
		case "uuid":
			return func(*exprEnv) any { return newUUID() }
		}
	case *ast.IdentifierNode:
		switch n.Value {
		case "type":
			return func(env *exprEnv) any { return env.Type }
		case "from":
			return func(env *exprEnv) any { return env.From }
		case "id":
			return func(env *exprEnv) any { return env.ID }
		case "ts":
			return func(env *exprEnv) any { return env.TS }
		}
	}
	return nil
}

type dataVisitor struct{ found bool }

func (v *dataVisitor) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok && id.Value == "data" {
		v.found = true
	}
}

// run evaluates the program against env with a pooled VM.
func (p *program) run(env *exprEnv) (any, error) {
	if p.direct != nil {
		return p.direct(env), nil
	}
	machine := p.vms.Get().(*vm.VM)
	out, err := machine.Run(p.prog, env)
	p.vms.Put(machine)
	return out, err
}

// newEnv fills an expression env from m, decoding its data only when asked.
func newEnv(env *exprEnv, m *core.Message, withData bool) error {
	*env = exprEnv{Type: m.Type, From: m.From, To: m.To, ID: m.ID, TS: m.TS, Claims: m.Claims}
	if withData {
		d, err := decodeData(m.Data)
		if err != nil {
			return err
		}
		env.Data = d
	}
	return nil
}

// nowMillis is now(): ms since epoch, like ts.
func nowMillis() int64 { return time.Now().UnixMilli() }

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// exprError words an expression's compile error for a config problem; the
// error itself quotes the expression and points at the fault.
func exprError(setting string, err error) error {
	return fmt.Errorf("%s: invalid expression: %v", setting, err)
}
