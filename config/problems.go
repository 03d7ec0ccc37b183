package config

import (
	"cmp"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Problem is one thing wrong with a configuration, located so that a person
// can go straight to the line to fix.
type Problem struct {
	File    string // file name as given to Parse; empty for a Config built in code
	Line    int    // 1-based line of the offending key; 0 when the value is not in the file
	Path    string // YAML path such as limits.max_frame_bytes or envs.h5.wire; empty for file-level problems
	Message string
}

func (p Problem) String() string {
	var b strings.Builder
	switch {
	case p.File != "" && p.Line > 0:
		b.WriteString(p.File + ":" + strconv.Itoa(p.Line) + ": ")
	case p.File != "":
		b.WriteString(p.File + ": ")
	case p.Line > 0:
		b.WriteString("line " + strconv.Itoa(p.Line) + ": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every problem found in one configuration. Parse and Validate
// report them all at once so that fixing a file takes one round trip.
type Problems []Problem

// Error lists one problem per line, in file order; problems that have no line
// (values left at their default, the environment) come last.
func (ps Problems) Error() string {
	lines := make([]string, 0, len(ps))
	for _, p := range ps.sorted() {
		lines = append(lines, p.String())
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) sorted() Problems {
	out := slices.Clone(ps)
	slices.SortStableFunc(out, func(a, b Problem) int {
		if (a.Line == 0) != (b.Line == 0) {
			return cmp.Compare(b.Line, a.Line) // the one without a line goes last
		}
		return cmp.Compare(a.Line, b.Line)
	})
	return out
}

// orNil keeps a nil Problems from becoming a non-nil error interface.
func (ps Problems) orNil() error {
	if len(ps) == 0 {
		return nil
	}
	return ps.sorted()
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// join appends one key to a YAML path, quoting keys that would make the path
// ambiguous (an env named "a.b", an empty key).
func join(path, key string) string {
	if !plainKey.MatchString(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
