package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
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
	out, _, probs := expandRefs(src, file, lookup)
	return out, probs
}

// substitution is one ${VAR} expanded: ref as written, the value it gave,
// and the lines of the expanded text that value is on.
type substitution struct {
	ref, val    string
	first, last int
}

// expandRefs is expand that also says what it substituted where, so that
// problems found in the expanded text can name ${VAR} instead of its value.
func expandRefs(src []byte, file string, lookup func(string) (string, bool)) ([]byte, []substitution, Problems) {
	var out strings.Builder
	var probs Problems
	var subs []substitution
	shift := 0 // lines the values written so far added (a value may hold newlines)
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
			if val != "" {
				nl := strings.Count(val, "\n")
				subs = append(subs, substitution{ref: ref, val: val, first: i + 1 + shift, last: i + 1 + shift + nl})
				shift += nl
			}
		}
		out.WriteString(code + comment)
	}
	return []byte(out.String()), subs, probs
}

// redact rewrites the messages of probs so that no value a ${VAR} gave
// appears in them: it may be a secret (a JWT key, a Redis password), and
// problems end up in logs and terminals. A problem on a line with a
// substitution names its ${VAR} instead; one without a line is checked
// against every substitution of the file.
func redact(probs Problems, subs []substitution) Problems {
	if len(subs) == 0 || len(probs) == 0 {
		return probs
	}
	// Longest values first, so that a value inside another is not replaced in it.
	sorted := slices.Clone(subs)
	slices.SortStableFunc(sorted, func(a, b substitution) int { return len(b.val) - len(a.val) })
	out := slices.Clone(probs)
	for i := range out {
		p := &out[i]
		for _, s := range sorted {
			if p.Line != 0 && (p.Line < s.first || p.Line > s.last) {
				continue
			}
			// A quoted value (got "…") becomes the bare reference, then any
			// other occurrence that stands on its own (not inside a longer word).
			p.Message = strings.ReplaceAll(p.Message, strconv.Quote(s.val), s.ref)
			p.Message = replaceWord(p.Message, s.val, s.ref)
			if strings.Contains(s.val, "\n") {
				// YAML may have folded the lines of the value into one: each line on its own too.
				for _, l := range strings.Split(s.val, "\n") {
					if l = strings.TrimSpace(l); l != "" {
						p.Message = replaceWord(p.Message, l, s.ref)
					}
				}
			}
		}
	}
	return out
}

// replaceWord replaces each occurrence of old in s that is not part of a
// longer word (no letter, digit or _ right before or after it).
func replaceWord(s, old, repl string) string {
	var b strings.Builder
	for {
		at := strings.Index(s, old)
		if at < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := at + len(old)
		if wordByte(s, at-1) || wordByte(s, end) {
			b.WriteString(s[:at+1])
			s = s[at+1:]
			continue
		}
		b.WriteString(s[:at] + repl)
		s = s[end:]
	}
}

func wordByte(s string, i int) bool {
	if i < 0 || i >= len(s) {
		return false
	}
	c := s[i]
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
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
