package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runBinary runs the relay binary in dir and returns its stdout, stderr and
// exit status.
func runBinary(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(relayBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PORT=")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("relay %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// Every command answers relay help CMD and CMD --help (and -h) on stdout
// with exit status 0, listing each of its flags.
func TestHelpForEveryCommand(t *testing.T) {
	dir := t.TempDir()
	for _, c := range commands {
		fs := newFlagSet(c)
		c.setup(fs, outputs{io.Discard, io.Discard})
		var flags []string
		fs.VisitAll(func(f *flag.Flag) { flags = append(flags, "-"+f.Name) })
		for _, args := range [][]string{{"help", c.name}, {c.name, "--help"}, {c.name, "-h"}} {
			out, errOut, code := runBinary(t, dir, args...)
			if code != 0 || errOut != "" {
				t.Errorf("relay %s: exit %d, stderr %q", strings.Join(args, " "), code, errOut)
			}
			if !strings.HasPrefix(out, "usage: relay "+c.name) {
				t.Errorf("relay %s printed:\n%s", strings.Join(args, " "), out)
			}
			for _, f := range flags {
				if !strings.Contains(out, "  "+f) {
					t.Errorf("relay %s does not list flag %s:\n%s", strings.Join(args, " "), f, out)
				}
			}
		}
	}
	out, _, code := runBinary(t, dir, "help")
	if code != 0 || !strings.Contains(out, "serve [-c FILE]") {
		t.Errorf("relay help: exit %d:\n%s", code, out)
	}
	// Used wrongly: the command's usage on stderr, exit status 2.
	out, errOut, code := runBinary(t, dir, "serve", "-bogus")
	if code != 2 || out != "" || !strings.Contains(errOut, "usage: relay serve") || !strings.Contains(errOut, "-bogus") {
		t.Errorf("relay serve -bogus: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	if _, errOut, code := runBinary(t, dir, "help", "bogus"); code != 2 || !strings.Contains(errOut, `unknown command "bogus"`) {
		t.Errorf("relay help bogus: exit %d, stderr:\n%s", code, errOut)
	}
}

func TestVersionFlag(t *testing.T) {
	for _, arg := range []string{"--version", "-version", "version"} {
		out, errOut, code := runBinary(t, t.TempDir(), arg)
		if code != 0 || !strings.HasPrefix(out, "relay ") || errOut != "" {
			t.Errorf("relay %s: exit %d, stdout %q, stderr %q", arg, code, out, errOut)
		}
	}
}

// relay docs writes nothing unless told where.
func TestDocsNeedsAnOutputDir(t *testing.T) {
	dir := t.TempDir()
	_, errOut, code := runBinary(t, dir, "docs")
	if code != 2 || !strings.Contains(errOut, "-o DIR") {
		t.Errorf("relay docs: exit %d, stderr:\n%s", code, errOut)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("relay docs without -o wrote %d entries into the working directory", len(entries))
	}
	out, _, code := runBinary(t, dir, "docs", "-o", "site")
	if code != 0 || !strings.Contains(out, "wrote docs/config.md") {
		t.Fatalf("relay docs -o site: exit %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "site", "relay.schema.json")); err != nil {
		t.Error(err)
	}
	if _, errOut, code := runBinary(t, dir, "docs", "-o", "site", "extra"); code != 2 || !strings.Contains(errOut, "unexpected arguments") {
		t.Errorf("relay docs with an extra argument: exit %d, stderr:\n%s", code, errOut)
	}
}

// relay check without a file says so and fails: "ok" would let a CI step
// pass that checks nothing.
func TestCheckWithoutAFile(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := runBinary(t, dir, "check")
	if code != 1 || out != "" || !strings.Contains(errOut, "no relay.yaml in "+dir) {
		t.Errorf("relay check in an empty directory: exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	if err := os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte("wire: v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, code := runBinary(t, dir, "check"); code != 0 || out != "relay.yaml: ok (0 routes)\n" {
		t.Errorf("relay check beside a relay.yaml: exit %d, stdout %q", code, out)
	}
	if _, errOut, code := runBinary(t, dir, "check", "-c", "relay.yaml", "other.yaml"); code != 2 || !strings.Contains(errOut, "one config file at most") {
		t.Errorf("relay check with two files: exit %d, stderr:\n%s", code, errOut)
	}
	err := Run(context.Background(), []string{"check", "-c", filepath.Join(dir, "missing.yaml")}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("relay check -c of a missing file: %v", err)
	}
}
