package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runIn runs a command in dir and fails the test when it fails.
func runIn(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// relay plugin new scaffolds plugins that build, pass their own tests and,
// run for real through the route of their relay.yaml by relay test, pass
// messages of every type. A plugin changed to drop messages fails that
// route test, so it does go through the plugin.
func TestPluginNewScaffoldsWorkingPlugins(t *testing.T) {
	checkout, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, c := range []struct {
		lang, file, pass, drop string
		build                  [][]string
	}{
		{"go", "main.go", "return []*sdk.Message{m}, nil", "return sdk.Drop()",
			[][]string{{"go", "mod", "tidy"}, {"go", "vet", "./..."}, {"go", "test", "./..."}, {"go", "build", "-o", "my-go-plugin", "."}}},
		{"node", "index.js", "return msg;", "return [];",
			[][]string{{"npm", "install", "--no-audit", "--no-fund"}, {"npm", "test"}}},
	} {
		t.Run(c.lang, func(t *testing.T) {
			name := "my-" + c.lang + "-plugin"
			out, errOut, code := runBinary(t, dir, "plugin", "new", name, "-lang", c.lang, "-relay", checkout)
			if code != 0 || !strings.Contains(out, "wrote a "+c.lang+" plugin to "+name) {
				t.Fatalf("relay plugin new: exit %d\n%s%s", code, out, errOut)
			}
			pdir := filepath.Join(dir, name)
			for _, b := range c.build {
				runIn(t, pdir, b[0], b[1:]...)
			}
			out, errOut, code = runBinary(t, pdir, "test")
			if code != 0 || !strings.Contains(out, "PASS: 2 tests") {
				t.Fatalf("relay test of the scaffolded %s plugin: exit %d\n%s%s", c.lang, code, out, errOut)
			}
			src := mustRead(t, filepath.Join(pdir, c.file))
			if !strings.Contains(src, c.pass) {
				t.Fatalf("%s does not say %q", c.file, c.pass)
			}
			// The code's return is the last one: the doc comment above it names it too.
			i := strings.LastIndex(src, c.pass)
			mustWrite(t, filepath.Join(pdir, c.file), src[:i]+c.drop+src[i+len(c.pass):])
			if c.lang == "go" {
				runIn(t, pdir, "go", "build", "-o", name, ".")
			}
			out, _, code = runBinary(t, pdir, "test")
			if code != 1 || !strings.Contains(out, "want 1 message delivered, got nothing delivered by route "+name) {
				t.Errorf("relay test of a %s plugin that drops: exit %d\n%s", c.lang, code, out)
			}
		})
	}
}

func TestPluginNewRefusals(t *testing.T) {
	checkout, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "taken"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
		code int
	}{
		{[]string{"plugin"}, "the subcommand is new", 2},
		{[]string{"plugin", "new"}, "name the plugin", 2},
		{[]string{"plugin", "new", "x"}, "-lang: want go or node", 2},
		{[]string{"plugin", "new", "Bad_Name", "-lang", "go"}, "is not a plugin name", 2},
		{[]string{"plugin", "new", "taken", "-lang", "go", "-o", dir, "-relay", checkout}, "exists already", 1},
		{[]string{"plugin", "new", "x", "-lang", "go", "-relay", dir}, "not a relay checkout", 1},
	}
	for _, c := range cases {
		err := Run(context.Background(), c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || exitCode(err) != c.code {
			t.Errorf("relay %s: %v (exit %d), want %q and exit %d", strings.Join(c.args, " "), err, exitCode(err), c.want, c.code)
		}
	}
	// Outside a checkout, and named by nothing, there is no SDK to build against.
	t.Chdir(dir)
	if _, err := relayCheckout(""); err != nil && !strings.Contains(err.Error(), "-relay DIR") {
		t.Errorf("relayCheckout outside a checkout: %v", err)
	}
}
