package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/expr-lang/expr"

	"github.com/pairrelay/relay/core"
)

func init() {
	core.RegisterHandler(core.HandlerSpec{
		Name:    "filter",
		Summary: "Keeps or drops messages by a boolean expression.",
		New:     func() core.Handler { return &Filter{Action: actionKeep} },
	})
}

// Filter passes or drops messages by the value of an expression.
type Filter struct {
	Expr   string `yaml:"expr" doc:"Boolean expression (expr-lang) over the message, e.g. from == 'h5' && data.size < 1000. It sees type, data (the decoded JSON; a missing key is nil, ?. walks optional objects), from, to, id, ts (ms since epoch), claims (the sender's auth claims, nil without auth: claims?.role), now() (ms since epoch) and uuid(); never the token. Unknown names are errors at startup; an expression that fails on a message (data of an unexpected shape) is a failure, which the route's on_error decides about. Required."`
	Action string `yaml:"action" doc:"keep: messages for which expr is true go on, the others are dropped; drop: messages for which expr is true are dropped, the others go on." default:"keep"`

	prog *program
}

const (
	actionKeep   = "keep"
	actionDrop   = "drop"
	actionReject = "reject"
)

// Provision compiles the expression.
func (f *Filter) Provision(context.Context, core.ProvisionEnv) error {
	if f.Action != actionKeep && f.Action != actionDrop {
		return fmt.Errorf("action: must be keep or drop, got %q", f.Action)
	}
	if f.Expr == "" {
		return errors.New("expr: is required")
	}
	p, err := compileExpr(f.Expr, expr.AsBool())
	if err != nil {
		return exprError("expr", err)
	}
	f.prog = p
	return nil
}

// Handle evaluates the expression and keeps or drops the message.
func (f *Filter) Handle(_ context.Context, m *core.Message) ([]*core.Message, error) {
	var env exprEnv
	if err := newEnv(&env, m, f.prog.usesData); err != nil {
		return nil, err
	}
	out, err := f.prog.run(&env)
	if err != nil {
		return nil, fmt.Errorf("expr: %v", err)
	}
	if out.(bool) == (f.Action == actionKeep) {
		return []*core.Message{m}, nil
	}
	return nil, nil
}

// NonBlocking: Handle only computes; the host needs no timeout for it.
func (*Filter) NonBlocking() {}
