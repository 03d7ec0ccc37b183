package main

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
)

// scaffold holds the files relay plugin new writes, as templates: go/ and
// node/ for each language, and those at the top for both.
//
//go:embed scaffold
var scaffold embed.FS

var pluginCommand = &command{
	name:     "plugin",
	synopsis: "new NAME -lang go|node [-o DIR] [-relay CHECKOUT]",
	summary:  "scaffold a plugin that builds, has tests and passes every message",
	about: "relay plugin new NAME writes a working plugin into DIR/NAME (DIR: the working directory):\n" +
		"the plugin (Go with plugins/sdk, or Node.js with plugins/sdk-node), its unit test, a relay.yaml\n" +
		"with a route through it and a relay.test.yaml that relay test runs through that route. As\n" +
		"scaffolded it passes messages of every type on unchanged. Until the SDKs are published it\n" +
		"builds against a relay checkout: CHECKOUT, or the one relay runs from or is run in.",
	setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
		lang := fs.String("lang", "", "language of the plugin: go or node (required)")
		dir := fs.String("o", ".", "`DIR` to create the plugin's directory in")
		checkout := fs.String("relay", "", "relay `CHECKOUT` whose SDK the plugin builds against (default: found from the working directory or the relay binary)")
		return func(_ context.Context, args []string) error {
			if len(args) == 0 || args[0] != "new" {
				return usageErr("plugin: the subcommand is new: relay plugin new NAME -lang go|node")
			}
			// Flags may follow the name: relay plugin new NAME -lang go.
			if err := fs.Parse(args[1:]); err != nil {
				return usageErr(fmt.Sprintf("plugin new: %v", err))
			}
			rest := fs.Args()
			if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
				name := rest[0]
				if err := fs.Parse(rest[1:]); err != nil {
					return usageErr(fmt.Sprintf("plugin new: %v", err))
				}
				if fs.NArg() > 0 {
					return usageErr(fmt.Sprintf("plugin new: unexpected arguments %q", fs.Args()))
				}
				return newPlugin(name, *lang, *dir, *checkout, out)
			}
			return usageErr("plugin new: name the plugin: relay plugin new NAME -lang go|node")
		}
	},
}

var pluginName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

func newPlugin(name, lang, dir, checkout string, out outputs) error {
	if !pluginName.MatchString(name) {
		return usageErr(fmt.Sprintf("plugin new: %q is not a plugin name: lower-case letters, digits and -, starting with a letter", name))
	}
	if lang != "go" && lang != "node" {
		return usageErr(fmt.Sprintf("plugin new: -lang: want go or node, got %q", lang))
	}
	root, err := relayCheckout(checkout)
	if err != nil {
		return fmt.Errorf("plugin new: %w", err)
	}
	target := filepath.Join(dir, name)
	if _, err := os.Stat(target); err == nil {
		return fmt.Errorf("plugin new: %s exists already: pick another name or -o DIR", target)
	}
	files, err := renderScaffold(lang, map[string]string{"Name": name, "Relay": filepath.ToSlash(root)})
	if err != nil {
		return fmt.Errorf("plugin new: %w", err)
	}
	for _, f := range files {
		p := filepath.Join(target, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("plugin new: %w", err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return fmt.Errorf("plugin new: %w", err)
		}
	}
	fmt.Fprintf(out.stdout, "wrote a %s plugin to %s (the SDK from %s)\nnext:\n  cd %s\n", lang, target, root, target)
	if lang == "go" {
		fmt.Fprintf(out.stdout, "  go mod tidy && go test ./... && go build -o %s .\n", name)
	} else {
		fmt.Fprint(out.stdout, "  npm install && npm test\n")
	}
	fmt.Fprint(out.stdout, "  relay test      # a message of any type through the plugin's route\n")
	return nil
}

// scaffoldFile is one rendered file, its path relative to the plugin's
// directory.
type scaffoldFile struct {
	Path string
	Data []byte
}

// renderScaffold renders the templates of lang and the shared ones. A
// template's name is its file's without .tmpl; gitignore and npmrc become
// dot files (a dot file would not be embedded as it is).
func renderScaffold(lang string, vars map[string]string) ([]scaffoldFile, error) {
	var files []scaffoldFile
	err := fs.WalkDir(scaffold, "scaffold", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, "scaffold/")
		if l, rest, ok := strings.Cut(rel, "/"); ok {
			if l != lang {
				return nil
			}
			rel = rest
		}
		rel = strings.TrimSuffix(rel, ".tmpl")
		if base := path.Base(rel); base == "gitignore" || base == "npmrc" {
			rel = path.Join(path.Dir(rel), "."+base)
		}
		src, err := scaffold.ReadFile(p)
		if err != nil {
			return err
		}
		t, err := template.New(rel).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, vars); err != nil {
			return err
		}
		files = append(files, scaffoldFile{Path: rel, Data: b.Bytes()})
		return nil
	})
	return files, err
}

const relayModule = "github.com/pairrelay/relay"

// relayCheckout is the root of the relay checkout a new plugin builds
// against: the one named, or the one around the working directory, or the
// one around the relay binary (bin/relay of make build).
func relayCheckout(named string) (string, error) {
	if named != "" {
		abs, err := filepath.Abs(named)
		if err != nil {
			return "", err
		}
		if !isRelayRoot(abs) {
			return "", fmt.Errorf("-relay %s: not a relay checkout (no go.mod of %s there)", named, relayModule)
		}
		return abs, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			starts = append(starts, filepath.Dir(real))
		}
	}
	for _, dir := range starts {
		for {
			if isRelayRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("no relay checkout found to build the plugin against (the SDKs are not published yet): " +
		"run relay plugin new inside a clone of the relay repository, or name one with -relay DIR")
}

func isRelayRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if mod, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.TrimSpace(mod) == relayModule
		}
	}
	return false
}
