// Package docgen writes relay's reference documentation from the code: the
// yaml, doc and default tags of the relay.yaml structs (package config) and
// of every registered handler's settings (core.HandlerSpecs). It is
// `relay docs`, and its tests fail when the committed files are stale.
//
// It writes, under the repository root:
//
//	docs/config.md            every relay.yaml key
//	docs/handlers/README.md   the handlers, with links to
//	docs/handlers/NAME.md     each handler's settings and an example entry
//	relay.schema.json         a JSON Schema of relay.yaml, for editors
package docgen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pairrelay/relay/core"
)

// File is one generated file; Path is relative to the repository root,
// with slashes.
type File struct {
	Path string
	Data []byte
}

// Paths of the generated files, relative to the repository root.
const (
	ConfigPath   = "docs/config.md"
	HandlersDir  = "docs/handlers"
	SchemaPath   = "relay.schema.json"
	handlerIndex = HandlersDir + "/README.md"
)

// Generate returns every generated file, in order of path, for the
// handlers in specs (core.HandlerSpecs() once the handlers are registered).
func Generate(specs []core.HandlerSpec) ([]File, error) {
	hs, err := handlers(specs)
	if err != nil {
		return nil, err
	}
	keys := configSettings()
	files := []File{
		{ConfigPath, configMarkdown(keys, hs)},
		{handlerIndex, handlersIndex(hs)},
		{SchemaPath, schemaJSON(keys, hs)},
	}
	for _, h := range hs {
		files = append(files, File{HandlersDir + "/" + h.Name + ".md", handlerMarkdown(h)})
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// Stale compares the files Generate returns with those under root and
// lists, sorted, the paths that differ or are missing, and the generated
// handler pages no handler produces any more.
func Stale(root string, files []File) ([]string, error) {
	var stale []string
	want := map[string]bool{}
	for _, f := range files {
		want[f.Path] = true
		have, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f.Path)))
		switch {
		case errors.Is(err, os.ErrNotExist):
			stale = append(stale, f.Path+" (missing)")
		case err != nil:
			return nil, err
		case !bytes.Equal(have, f.Data):
			stale = append(stale, f.Path+" (differs)")
		}
	}
	orphans, err := orphanPages(root, want)
	if err != nil {
		return nil, err
	}
	for _, p := range orphans {
		stale = append(stale, p+" (no handler of that name)")
	}
	slices.Sort(stale)
	return stale, nil
}

// orphanPages lists the generated pages in docs/handlers that are no longer
// generated, such as the page of a handler since removed.
func orphanPages(root string, want map[string]bool) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(HandlersDir)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		p := HandlersDir + "/" + e.Name()
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".md") || want[p] {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(p)))
		if err != nil {
			return nil, err
		}
		if bytes.HasPrefix(data, []byte(generatedMarker)) {
			out = append(out, p)
		}
	}
	return out, nil
}

// Write writes files under root, leaving alone those already up to date,
// and removes generated handler pages no longer generated. It reports what
// it changed, one line each, to w.
func Write(root string, files []File, w io.Writer) error {
	want := map[string]bool{}
	for _, f := range files {
		want[f.Path] = true
		name := filepath.Join(root, filepath.FromSlash(f.Path))
		if have, err := os.ReadFile(name); err == nil && bytes.Equal(have, f.Data) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(name, f.Data, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(w, "wrote", f.Path)
	}
	orphans, err := orphanPages(root, want)
	if err != nil {
		return err
	}
	for _, p := range orphans {
		if err := os.Remove(filepath.Join(root, filepath.FromSlash(p))); err != nil {
			return err
		}
		fmt.Fprintln(w, "removed", p)
	}
	return nil
}

// Run is `relay docs -o DIR`: it writes the generated files under dir, the
// root of a checkout, and lists what it changed.
func Run(dir string, stdout io.Writer, specs []core.HandlerSpec) error {
	files, err := Generate(specs)
	if err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	var changes bytes.Buffer
	if err := Write(dir, files, &changes); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	if changes.Len() == 0 {
		fmt.Fprintf(stdout, "%d files in %s already up to date\n", len(files), dir)
		return nil
	}
	_, err = stdout.Write(changes.Bytes())
	return err
}
