package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// relayErrorCodes reads the relay.error codes of package core: the string
// constants named Err… that the code outside their declaration uses. A
// declared code nothing uses is never sent, so it is not one.
func relayErrorCodes(t *testing.T) (used, declared map[string]bool) {
	t.Helper()
	root := "../.."
	fset := token.NewFileSet()
	values := map[string]string{} // constant name → code
	declPos := map[string]bool{}  // where each is declared, to tell uses from it
	coreFiles, err := filepath.Glob(filepath.Join(root, "core", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range coreFiles {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Err") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						code, err := strconv.Unquote(lit.Value)
						if err != nil {
							t.Fatal(err)
						}
						values[name.Name] = code
						declPos[fset.Position(name.Pos()).String()] = true
					}
				}
			}
		}
	}
	if len(values) == 0 {
		t.Fatal("found no Err… string constants in core/*.go")
	}
	used = map[string]bool{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == "node_modules" || name == "testdata" || strings.HasPrefix(name, ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		inCore := f.Name.Name == "core"
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "core" && values[n.Sel.Name] != "" {
					used[values[n.Sel.Name]] = true
				}
			case *ast.Ident:
				if inCore && values[n.Name] != "" && !declPos[fset.Position(n.Pos()).String()] {
					used[values[n.Name]] = true
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	declared = map[string]bool{}
	for _, code := range values {
		declared[code] = true
	}
	return used, declared
}

// tableCodes returns the codes in the first column of the Markdown table
// whose header row starts with header: each `code` in backticks.
func tableCodes(t *testing.T, file, header string) map[string]bool {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, header) })
	if start < 0 {
		t.Fatalf("%s: no table with the header %q", file, header)
	}
	codes := map[string]bool{}
	for _, l := range lines[start+2:] {
		if !strings.HasPrefix(l, "|") {
			break
		}
		first := strings.Split(l, "|")[1]
		for _, m := range backticked.FindAllStringSubmatch(first, -1) {
			codes[m[1]] = true
		}
	}
	if len(codes) == 0 {
		t.Fatalf("%s: the table %q lists no codes", file, header)
	}
	return codes
}

var backticked = regexp.MustCompile("`([a-z][a-z0-9_.]*)`")

func sorted(set map[string]bool) []string { return slices.Sorted(maps.Keys(set)) }

// TestDocumentedErrorCodesAreTheCodesRelaySends keeps the lists of
// relay.error codes in docs/protocol.md and clients/js/README.md equal to
// the codes the relay's code sends, and the SDK's own codes apart from them.
func TestDocumentedErrorCodesAreTheCodesRelaySends(t *testing.T) {
	used, declared := relayErrorCodes(t)
	for _, doc := range []struct{ file, header string }{
		{"../../docs/protocol.md", "| `code` | Cause |"},
		{"../../clients/js/README.md", "| relay `code` |"},
	} {
		listed := tableCodes(t, doc.file, doc.header)
		if !maps.Equal(listed, used) {
			t.Errorf("%s lists the relay.error codes\n  %v\nbut relay sends (core's Err… constants in use)\n  %v",
				doc.file, sorted(listed), sorted(used))
		}
	}

	sdkListed := tableCodes(t, "../../clients/js/README.md", "| SDK `code` |")
	for code := range sdkListed {
		// The one shared name means the same refusal either way: the SDK
		// names close 4501 unauthorized, which follows relay.error
		// unauthorized after a refused relay.auth frame.
		if declared[code] && code != "unauthorized" {
			t.Errorf("clients/js/README.md: the SDK's own code %q is also a relay code: a client could not tell them apart", code)
		}
	}
	// The codes the SDK's source creates, and those it names for terminal
	// close codes, are the ones its README lists.
	sdkSource := map[string]bool{}
	srcs, err := filepath.Glob("../../clients/js/src/*.ts")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("clients/js/src: %v", err)
	}
	for _, path := range srcs {
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range []*regexp.Regexp{sdkErrorLiteral, sdkTerminalCode} {
			for _, m := range re.FindAllStringSubmatch(string(text), -1) {
				sdkSource[m[1]] = true
			}
		}
	}
	if !maps.Equal(sdkSource, sdkListed) {
		t.Errorf("clients/js/README.md lists the SDK's own codes\n  %v\nbut clients/js/src creates\n  %v",
			sorted(sdkListed), sorted(sdkSource))
	}
}

var (
	sdkErrorLiteral = regexp.MustCompile(`new RelayError\(\s*'([a-z][a-z0-9_]*)'`)
	sdkTerminalCode = regexp.MustCompile(`return '([a-z][a-z0-9_]*)';`)
)
