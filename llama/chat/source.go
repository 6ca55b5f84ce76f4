package chat

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ardanlabs/jinja"
)

// normalize reads the source as Jinja's lexer does: every "\r\n" and "\r" becomes "\n", and with
// keep_trailing_newline off (transformers' setting) one newline at the very end is dropped.
func normalize(text string) string {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	return strings.TrimSuffix(text, "\n")
}

// tag is the inside of one {{ … }} or {% … %} of a template, with the line it starts on.
type tag struct {
	body string
	line int
}

// tags splits a template into its expression and statement tags, skipping text, comments and
// raw blocks. It follows Jinja's rules as far as finding names needs: a tag ends at the first
// closing delimiter outside a string literal.
func tags(text string) []tag {
	var out []tag
	line := 1
	for i := 0; i < len(text); {
		if text[i] == '\n' {
			line++
		}
		if !strings.HasPrefix(text[i:], "{{") && !strings.HasPrefix(text[i:], "{%") && !strings.HasPrefix(text[i:], "{#") {
			i++
			continue
		}
		kind := text[i+1]
		closing := map[byte]string{'{': "}}", '%': "%}", '#': "#}"}[kind]
		start, j := i+2, i+2
		var quote byte
	scan:
		for ; j < len(text); j++ {
			c := text[j]
			switch {
			case quote != 0 && c == '\\':
				j++
			case quote != 0 && c == quote:
				quote = 0
			case quote == 0 && kind != '#' && (c == '\'' || c == '"'):
				quote = c
			case quote == 0 && strings.HasPrefix(text[j:], closing):
				break scan
			}
		}
		body := text[start:min(j, len(text))]
		if kind != '#' {
			out = append(out, tag{body: strings.Trim(body, "-+ \t\n"), line: line})
		}
		line += strings.Count(text[i:min(j+2, len(text))], "\n")
		i = j + 2
		if kind == '%' && isStatement(body, "raw") {
			end := strings.Index(text[i:], "endraw")
			if end < 0 {
				break
			}
			line += strings.Count(text[i:i+end], "\n")
			i += end
		}
	}
	return out
}

// isStatement reports whether a statement tag's body is the keyword alone.
func isStatement(body, keyword string) bool {
	return strings.TrimSpace(strings.Trim(body, "-+")) == keyword
}

// checkNames fails on a filter or test the engine does not have, naming its line, as Jinja's
// compiler does for the whole template before any of it runs (a name in a branch that a given
// conversation never takes still fails). It reports whether the template uses the trim filter.
func checkNames(text string) (trims bool, err error) {
	for _, tg := range tags(text) {
		for _, n := range names(tg.body) {
			if err := probe(n); err != nil {
				return false, fmt.Errorf("line %d: %v", tg.line, err)
			}
			trims = trims || (n.filter && n.ident == "trim")
		}
	}
	return trims, nil
}

// hasSeparator reports whether a string anywhere in v holds U+001C…U+001F.
func hasSeparator(v jinja.Value) bool {
	switch {
	case v.IsString():
		return strings.ContainsAny(v.AsString(), "\x1c\x1d\x1e\x1f")
	case v.IsList():
		for _, item := range v.AsList().Items {
			if hasSeparator(item) {
				return true
			}
		}
	case v.IsDict():
		d := v.AsDict()
		for _, k := range d.Keys {
			if item, _ := d.Get(k); hasSeparator(item) {
				return true
			}
		}
	}
	return false
}

// name is a filter or test a tag uses.
type name struct {
	filter bool // a filter (after | or in {% filter %}); else a test (after is / is not)
	ident  string
}

// names lists the filters and tests a tag body uses, outside string literals.
func names(body string) []name {
	var out []name
	var quote byte
	prevWord := ""
	for i := 0; i < len(body); {
		c := body[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
			i++
		case c == '\'' || c == '"':
			quote = c
			i++
		case c == '|':
			j := skipSpace(body, i+1)
			if id := ident(body[j:]); id != "" {
				out = append(out, name{filter: true, ident: id})
				i = j + len(id)
				continue
			}
			i++
		case isIdentStart(c):
			id := ident(body[i:])
			switch {
			case prevWord == "" && i == skipSpace(body, 0) && id == "filter":
				j := skipSpace(body, i+len(id))
				if f := ident(body[j:]); f != "" {
					out = append(out, name{filter: true, ident: f})
				}
			case prevWord == "is" && id == "not":
				prevWord = "is"
				i += len(id)
				continue
			case prevWord == "is":
				out = append(out, name{ident: id})
			}
			prevWord = id
			i += len(id)
			continue
		default:
			if c != ' ' && c != '\t' && c != '\n' {
				prevWord = "-"
			}
			i++
		}
	}
	return out
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
		i++
	}
	return i
}

func isIdentStart(c byte) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

// ident returns the identifier s starts with, or "".
func ident(s string) string {
	if s == "" || !isIdentStart(s[0]) {
		return ""
	}
	i := 1
	for i < len(s) && (isIdentStart(s[i]) || ('0' <= s[i] && s[i] <= '9')) {
		i++
	}
	return s[:i]
}

// probe asks the engine whether it has a filter or test of that name: it says "unknown filter"
// or "unknown test" for one it lacks, and other errors (a missing argument) for one it has.
func probe(n name) error {
	src, kind := "{{ 0 is "+n.ident+" }}", "test"
	if n.filter {
		src, kind = "{{ 0|"+n.ident+" }}", "filter"
	}
	t, err := jinja.Compile(src)
	if err == nil {
		_, err = t.RenderValues(nil)
	}
	if err != nil && strings.Contains(err.Error(), "unknown "+kind) {
		return fmt.Errorf("the %s %q is not supported by tiller's template engine", kind, n.ident)
	}
	return nil
}

// raised is the error of the template's raise_exception(message).
type raised struct{ msg string }

func (r *raised) Error() string { return r.msg }

func raiseException(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), &raised{msg: "raise_exception() without a message"}
	}
	msg := args[0].String()
	if args[0].IsString() {
		msg = args[0].AsString()
	}
	return jinja.Undefined(), &raised{msg: msg}
}

// where names the line of the raise_exception call that raised r: the engine does not track
// lines while rendering, so it is the call whose leading string literal starts the message, or
// the only call. " at line N", " at one of lines N, M" or "" when no call matches.
func (r *raised) where(text string) string {
	var all, matching []int
	for _, tg := range tags(text) {
		for rest := tg.body; ; {
			k := strings.Index(rest, "raise_exception(")
			if k < 0 {
				break
			}
			rest = rest[k+len("raise_exception("):]
			all = append(all, tg.line)
			if lit, ok := leadingLiteral(rest); ok && lit != "" && strings.HasPrefix(r.msg, lit) {
				matching = append(matching, tg.line)
			}
		}
	}
	lines := matching
	if len(lines) == 0 {
		lines = all
	}
	lines = uniqueSorted(lines)
	switch len(lines) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf(" at line %d", lines[0])
	}
	s := make([]string, len(lines))
	for i, l := range lines {
		s[i] = fmt.Sprint(l)
	}
	return " at one of lines " + strings.Join(s, ", ")
}

// leadingLiteral reads the string literal an argument list starts with, unescaped, as far as a
// message prefix needs (\n, \t, \\, \', \").
func leadingLiteral(s string) (string, bool) {
	s = strings.TrimLeft(s, " \t\n")
	if s == "" || (s[0] != '\'' && s[0] != '"') {
		return "", false
	}
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(s[i])
			}
		case c == q:
			return b.String(), true
		default:
			b.WriteByte(c)
		}
	}
	return "", false
}

func uniqueSorted(xs []int) []int {
	sort.Ints(xs)
	out := xs[:0]
	for i, x := range xs {
		if i == 0 || x != xs[i-1] {
			out = append(out, x)
		}
	}
	return out
}
