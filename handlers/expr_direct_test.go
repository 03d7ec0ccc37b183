package handlers

import (
	"reflect"
	"testing"
	"time"
)

// TestDirectExpressionsMatchTheVM: the expressions computed without the VM
// give what the VM gives, of the same type; others still go to the VM.
func TestDirectExpressionsMatchTheVM(t *testing.T) {
	env := &exprEnv{Type: "addMaterial", From: "h5", ID: "c-1", TS: 1764120000000, To: []string{"miniapp"}}
	for _, src := range []string{"type", "from", "id", "ts", " from "} {
		p, err := compileExpr(src)
		if err != nil {
			t.Fatal(err)
		}
		if p.direct == nil {
			t.Fatalf("%q: no direct form", src)
		}
		want, err := runVM(p, env)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.direct(env); !reflect.DeepEqual(got, want) {
			t.Errorf("%q: direct %#v, VM %#v", src, got, want)
		}
	}
	for _, src := range []string{"now()", "uuid()"} {
		p, err := compileExpr(src)
		if err != nil {
			t.Fatal(err)
		}
		want, err := runVM(p, env)
		if err != nil {
			t.Fatal(err)
		}
		got := p.direct(env)
		if reflect.TypeOf(got) != reflect.TypeOf(want) {
			t.Errorf("%q: direct gives %T, VM %T", src, got, want)
		}
		if src == "now()" && got.(int64)-want.(int64) > int64(time.Minute/time.Millisecond) {
			t.Errorf("now(): direct %v, VM %v", got, want)
		}
	}
	for _, src := range []string{"now() + 1", "from == 'h5'", "data", "to", "upper(from)", "'x'"} {
		p, err := compileExpr(src)
		if err != nil {
			t.Fatal(err)
		}
		if p.direct != nil {
			t.Errorf("%q has a direct form; only now(), uuid() and single fields do", src)
		}
	}
}

func runVM(p *program, env *exprEnv) (any, error) {
	direct := p.direct
	p.direct = nil
	defer func() { p.direct = direct }()
	return p.run(env)
}
