package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// relay types turns the validate schemas of testdata/types/relay.yaml into
// the TypeScript of testdata/types/relay.ts ($ref, tuples, unions, consts,
// quoted keys, a whole-message schema, two validates on one route). The
// compile test of the client (clients/js/scripts/types-test.mjs) checks
// that such types accept valid data and refuse wrong fields.
func TestTypesTypeScript(t *testing.T) {
	out := filepath.Join(t.TempDir(), "relay.ts")
	if err := Run(context.Background(), []string{"types", "-lang", "ts", "-c", "testdata/types/relay.yaml", "-o", out}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	golden := "testdata/types/relay.ts"
	if *updateGolden {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/relay -run TestTypesTypeScript -update writes it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("relay types wrote:\n%s\nwant (%s):\n%s", got, golden, want)
	}
}

func TestTypesRefusals(t *testing.T) {
	cases := []struct {
		args []string
		want string
		code int
	}{
		{[]string{"types", "-c", "testdata/types/relay.yaml"}, "-lang: want ts", 2},
		{[]string{"types", "-lang", "go", "-c", "testdata/types/relay.yaml"}, `got "go"`, 2},
		{[]string{"types", "-lang", "ts", "-name", "my-map", "-c", "testdata/types/relay.yaml"}, "not a TypeScript identifier", 2},
		{[]string{"types", "-lang", "ts", "-c", "testdata/types/missing.yaml"}, "missing.yaml", 1},
	}
	for _, c := range cases {
		err := Run(context.Background(), c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || exitCode(err) != c.code {
			t.Errorf("relay %s: %v (exit %d), want %q and exit %d", strings.Join(c.args, " "), err, exitCode(err), c.want, c.code)
		}
	}
	t.Chdir(t.TempDir())
	err := Run(context.Background(), []string{"types", "-lang", "ts"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no relay.yaml") {
		t.Errorf("relay types without relay.yaml: %v", err)
	}
}
