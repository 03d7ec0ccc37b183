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

// didYouMean is " (did you mean NAME?)" for the nearest name, or "".
func didYouMean(got string, known []string) string {
	if near := nearest(got, known); near != "" {
		return " (did you mean " + near + "?)"
	}
	return ""
}

// nearest returns the name in known nearest to got, or "" when none is
// close enough to be the one meant: at most one edit in three letters (two
// for webhok → webhook, handlrs → handlers), ignoring case. Ties go to the
// name first in alphabetical order, so the hint is the same on every run.
func nearest(got string, known []string) string {
	best, bestDist := "", 0
	limit := max(1, len(got)/3)
	for _, k := range known {
		d := editDistance(strings.ToLower(got), strings.ToLower(k))
		if d > limit || d >= len(got) || d >= len(k) {
			continue
		}
		if best == "" || d < bestDist || d == bestDist && k < best {
			best, bestDist = k, d
		}
	}
	if best == got {
		return ""
	}
	return best
}

// editDistance is the number of single-letter insertions, deletions,
// substitutions and swaps of neighbours that turn a into b (optimal string
// alignment distance); a swap counts once because it is one slip of the
// fingers.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// Three rows of the table: i-2, i-1 and i.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
