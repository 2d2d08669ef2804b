// Package regex decides which SMI regexes (RE2, full match) Istio's AuthorizationPolicy can express
// exactly — as an exact, prefix ("lit*"), suffix ("*lit"), presence ("*") or path template
// ("/a/{*}/b") string — and otherwise gives the narrowest pattern that still matches every string
// the regex does, for the Envoy rung to pair with a full regex check.
//
// HTTP paths and header values never contain a newline, so "." and "[^\n]" count as any character.
package regex

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode"
)

// Kind is the shape of an AuthorizationPolicy string pattern.
type Kind int

const (
	// Inexpressible: no AuthorizationPolicy pattern matches exactly the regex's strings.
	Inexpressible Kind = iota
	Exact
	Prefix
	Suffix
	Presence
	Template
)

func (k Kind) String() string {
	return [...]string{"Inexpressible", "Exact", "Prefix", "Suffix", "Presence", "Template"}[k]
}

// Pattern is an AuthorizationPolicy string pattern.
type Pattern struct {
	Kind Kind
	// Literal is the exact value, the prefix, the suffix, or the template; empty for Presence.
	Literal string
}

// String renders the pattern as AuthorizationPolicy writes it.
func (p Pattern) String() string {
	switch p.Kind {
	case Exact, Template:
		return p.Literal
	case Prefix:
		return p.Literal + "*"
	case Suffix:
		return "*" + p.Literal
	case Presence:
		return "*"
	}
	return ""
}

// Match applies Istio's matching rules for the pattern to s.
func (p Pattern) Match(s string) bool {
	switch p.Kind {
	case Exact:
		return s == p.Literal
	case Prefix:
		return strings.HasPrefix(s, p.Literal)
	case Suffix:
		return strings.HasSuffix(s, p.Literal)
	case Presence:
		return true
	case Template:
		return matchTemplate(p.Literal, s)
	}
	return false
}

// Options says what the target Istio supports.
type Options struct {
	// Templates allows {*} path templates (Istio >= 1.22; paths only).
	Templates bool
}

// Result is the classification of one regex.
type Result struct {
	// Exact is set when a pattern matches exactly the regex's strings (Kind != Inexpressible).
	Exact Pattern
	// Superset always matches every string the regex matches; equal to Exact when that is set.
	Superset Pattern
}

// FullMatcher compiles expr for RE2 full-match semantics (what Envoy's safe_regex and SMI mean).
// It anchors the parsed form, so constructs such as \Q survive the wrapping.
func FullMatcher(expr string) (*regexp.Regexp, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("%q is not an RE2 regex: %w", expr, err)
	}
	return regexp.Compile(`^(?:` + re.String() + `)$`)
}

// Classify parses expr as RE2 (Go's regexp/syntax, Perl flags) and classifies it for full-match
// semantics. An invalid regex is an error.
func Classify(expr string, opts Options) (Result, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return Result{}, fmt.Errorf("%q is not an RE2 regex: %w", expr, err)
	}
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return Result{}, fmt.Errorf("%q is not an RE2 regex: %w", expr, err)
	}
	re = re.Simplify()
	ps, ok := pieces(re)
	if !ok {
		return Result{Superset: superset(expr)}, nil
	}
	if p, ok := shape(ps, opts); ok {
		return Result{Exact: p, Superset: p}, nil
	}
	return Result{Superset: superset(expr)}, nil
}

// piece is a literal, "any string" or (for templates) one path segment.
type piece struct {
	lit     string
	any     bool
	segment bool
}

// pieces flattens a regex into literals and wildcards, or fails for anything else.
func pieces(re *syntax.Regexp) ([]piece, bool) {
	var subs []*syntax.Regexp
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	} else {
		subs = []*syntax.Regexp{re}
	}
	var out []piece
	for i, s := range subs {
		switch {
		case s.Op == syntax.OpBeginText && i == 0, s.Op == syntax.OpEndText && i == len(subs)-1, s.Op == syntax.OpEmptyMatch:
			// Anchors at the ends are implied by full match.
		case s.Op == syntax.OpLiteral && s.Flags&syntax.FoldCase == 0:
			out = appendLit(out, string(s.Rune))
		case s.Op == syntax.OpStar && anyChar(s.Sub[0]):
			if len(out) == 0 || !out[len(out)-1].any {
				out = append(out, piece{any: true})
			}
		case s.Op == syntax.OpPlus && notSlash(s.Sub[0]):
			out = append(out, piece{segment: true})
		default:
			return nil, false
		}
	}
	return out, true
}

func appendLit(ps []piece, lit string) []piece {
	if n := len(ps); n > 0 && !ps[n-1].any && !ps[n-1].segment {
		ps[n-1].lit += lit
		return ps
	}
	return append(ps, piece{lit: lit})
}

// anyChar: ".", "(?s:.)", "[^\n]" — any character of a path or header value.
func anyChar(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return true
	case syntax.OpCharClass:
		return classIs(re.Rune, [][2]rune{{0, '\n' - 1}, {'\n' + 1, unicode.MaxRune}}) || classIs(re.Rune, [][2]rune{{0, unicode.MaxRune}})
	}
	return false
}

// notSlash: "[^/]" (optionally also excluding newline) — one character of a path segment.
func notSlash(re *syntax.Regexp) bool {
	return re.Op == syntax.OpCharClass && (classIs(re.Rune, [][2]rune{{0, '/' - 1}, {'/' + 1, unicode.MaxRune}}) ||
		classIs(re.Rune, [][2]rune{{0, '\n' - 1}, {'\n' + 1, '/' - 1}, {'/' + 1, unicode.MaxRune}}))
}

func classIs(runes []rune, ranges [][2]rune) bool {
	if len(runes) != 2*len(ranges) {
		return false
	}
	for i, r := range ranges {
		if runes[2*i] != r[0] || runes[2*i+1] != r[1] {
			return false
		}
	}
	return true
}

// reserved characters have a meaning in AuthorizationPolicy strings: a literal holding one
// cannot be written as is.
func reserved(lit string) bool { return strings.ContainsAny(lit, "*{}") }

func shape(ps []piece, opts Options) (Pattern, bool) {
	for _, p := range ps {
		if !p.any && !p.segment && reserved(p.lit) {
			return Pattern{}, false
		}
	}
	switch {
	case len(ps) == 0:
		return Pattern{Kind: Exact}, true
	case len(ps) == 1 && ps[0].any:
		return Pattern{Kind: Presence}, true
	case len(ps) == 1 && !ps[0].segment:
		return Pattern{Kind: Exact, Literal: ps[0].lit}, true
	case len(ps) == 2 && !ps[0].any && !ps[0].segment && ps[1].any:
		return Pattern{Kind: Prefix, Literal: ps[0].lit}, true
	case len(ps) == 2 && ps[0].any && !ps[1].any && !ps[1].segment:
		return Pattern{Kind: Suffix, Literal: ps[1].lit}, true
	}
	if opts.Templates {
		if t, ok := template(ps); ok {
			return Pattern{Kind: Template, Literal: t}, true
		}
	}
	return Pattern{}, false
}

// template accepts literals and whole segments "[^/]+" between slashes: /a/[^/]+/b -> /a/{*}/b.
func template(ps []piece) (string, bool) {
	var b strings.Builder
	hasSegment := false
	for i, p := range ps {
		switch {
		case p.any:
			return "", false
		case p.segment:
			before := i > 0 && strings.HasSuffix(ps[i-1].lit, "/")
			after := i == len(ps)-1 || (!ps[i+1].segment && strings.HasPrefix(ps[i+1].lit, "/"))
			if !before || !after {
				return "", false
			}
			b.WriteString("{*}")
			hasSegment = true
		default:
			b.WriteString(p.lit)
		}
	}
	return b.String(), hasSegment && strings.HasPrefix(b.String(), "/")
}

func matchTemplate(t, s string) bool {
	tp, sp := strings.Split(t, "/"), strings.Split(s, "/")
	if len(tp) != len(sp) {
		return false
	}
	for i := range tp {
		if tp[i] == "{*}" {
			if sp[i] == "" {
				return false
			}
			continue
		}
		if tp[i] != sp[i] {
			return false
		}
	}
	return true
}

// superset is the narrowest pattern sure to match every string the regex matches: its literal
// prefix, when the regex must start with one, else presence. (Compiled unanchored: every full
// match is a match at 0, so it starts with the prefix of any match; Go computes no prefix for
// some anchored programs.)
func superset(expr string) Pattern {
	prefix, complete := regexp.MustCompile(expr).LiteralPrefix()
	if complete {
		return Pattern{Kind: Exact, Literal: prefix}
	}
	if prefix == "" || reserved(prefix) {
		return Pattern{Kind: Presence}
	}
	return Pattern{Kind: Prefix, Literal: prefix}
}
