package config

import (
	"fmt"
	"regexp"
	"strings"
)

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand replaces ${VAR} and ${VAR:default} in src with values from the
// environment; $${ stands for a literal ${. A default applies when VAR is
// unset or empty, as with the shell's ${VAR:-default}. It works on the raw
// text so that a variable can stand for any YAML (a number, a list), which is
// also why the result must be written with care: quote values that may hold
// ": " or "#". Comments are left alone, so a commented-out line never fails
// for a variable it names. Every undefined variable is reported, each with its
// line.
func expand(src []byte, file string, lookup func(string) (string, bool)) ([]byte, Problems) {
	var out strings.Builder
	var probs Problems
	lines := strings.SplitAfter(string(src), "\n")
	for i, line := range lines {
		code, comment := splitComment(line)
		for {
			at := strings.Index(code, "${")
			if at < 0 {
				break
			}
			if at > 0 && code[at-1] == '$' { // $${: the escape for a literal ${
				out.WriteString(code[:at-1] + "${")
				code = code[at+2:]
				continue
			}
			out.WriteString(code[:at])
			end := strings.IndexByte(code[at:], '}')
			if end < 0 {
				probs = append(probs, Problem{File: file, Line: i + 1,
					Message: fmt.Sprintf("%s has no closing } (write $${ for a literal ${)", strings.TrimRight(code[at:], "\r\n"))})
				code = ""
				break
			}
			ref := code[at : at+end+1]
			name, def, hasDef := strings.Cut(ref[2:len(ref)-1], ":")
			code = code[at+end+1:]
			if !varName.MatchString(name) {
				probs = append(probs, Problem{File: file, Line: i + 1,
					Message: fmt.Sprintf("%s: %q is not a variable name (write $${ for a literal ${)", ref, name)})
				continue
			}
			val, ok := lookup(name)
			switch {
			case hasDef && (!ok || val == ""):
				val = def
			case !ok:
				probs = append(probs, Problem{File: file, Line: i + 1,
					Message: fmt.Sprintf("${%s} is not set (use ${%s:default} for a default)", name, name)})
			}
			out.WriteString(val)
		}
		out.WriteString(code + comment)
	}
	return []byte(out.String()), probs
}

// splitComment cuts a YAML comment off one line. It follows quotes opened on
// the same line; a # inside a multi-line quoted or block scalar is taken for a
// comment, which at worst leaves a variable there unexpanded.
func splitComment(line string) (code, comment string) {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == '"' && c == '\\', quote == '\'' && c == '\'' && i+1 < len(line) && line[i+1] == '\'':
			i++ // an escaped character or a doubled '' inside single quotes
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return line[:i], line[i:]
		case (c == '"' || c == '\'') && (i == 0 || strings.IndexByte(" \t[{,", line[i-1]) >= 0):
			quote = c
		}
	}
	return line, ""
}
