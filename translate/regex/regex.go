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
	// IgnoreCase: Istio compares the literal ignoring ASCII case (as it does for hosts).
	IgnoreCase bool
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
	lit := p.Literal
	if p.IgnoreCase {
		// Envoy's ignore_case folds ASCII letters only.
		s, lit = asciiLower(s), asciiLower(lit)
	}
	switch p.Kind {
	case Exact:
		return s == lit
	case Prefix:
		return strings.HasPrefix(s, lit)
	case Suffix:
		return strings.HasSuffix(s, lit)
	case Presence:
		return true
	case Template:
		return matchTemplate(p.Literal, s)
	}
	return false
}

// Options says what the target Istio supports and how it compares the value.
type Options struct {
	// Templates allows {*} path templates (Istio >= 1.22; paths only).
	Templates bool
	// IgnoreCase: the AuthorizationPolicy compares values ignoring ASCII case (Istio's hosts),
	// while RE2 does not. Exact is then set only when that comparison allows no string the regex
	// does not: every literal of the regex is free of ASCII letters or case-insensitive ((?i)).
	// The Superset stays a superset under case-insensitive comparison.
	IgnoreCase bool
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
	sup := superset(expr)
	sup.IgnoreCase = opts.IgnoreCase
	ps, ok := pieces(re, opts.IgnoreCase)
	if !ok {
		return Result{Superset: sup}, nil
	}
	if p, ok := shape(ps, opts); ok {
		p.IgnoreCase = opts.IgnoreCase
		return Result{Exact: p, Superset: p}, nil
	}
	return Result{Superset: sup}, nil
}

// piece is a literal, "any string" or (for templates) one path segment.
type piece struct {
	lit     string
	any     bool
	segment bool
}

// pieces flattens a regex into literals and wildcards, or fails for anything else. With
// ignoreCase (the pattern will be compared ignoring ASCII case), a case-sensitive literal holding an
// ASCII letter fails (the comparison would allow its other cases), and a case-insensitive literal
// ((?i)) is accepted, lower-cased: Istio then allows the ASCII case variants RE2 allows, and not
// the few non-ASCII ones RE2's folding adds (U+212A KELVIN SIGN for k, U+017F for s): narrower.
func pieces(re *syntax.Regexp, ignoreCase bool) ([]piece, bool) {
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
			if ignoreCase && hasASCIILetter(string(s.Rune)) {
				return nil, false
			}
			out = appendLit(out, string(s.Rune))
		case s.Op == syntax.OpLiteral && ignoreCase:
			out = appendLit(out, asciiLower(string(s.Rune)))
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

func hasASCIILetter(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c >= 'a' && c <= 'z' {
			return true
		}
	}
	return false
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
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
	t := b.String()
	return t, hasSegment && strings.HasPrefix(t, "/") && validTemplate(t)
}

// pchar is what Istio accepts as a literal segment of a path template (RFC 3986 pchar; Istio's
// security.IsValidLiteral); Envoy's {*} matches one segment of these characters only.
var pchar = regexp.MustCompile(`^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$`)

// validTemplate: every segment between slashes (leading and trailing slashes aside) is {*} or a
// non-empty pchar literal, as Istio's validation requires of a path holding a template.
func validTemplate(t string) bool {
	for _, seg := range strings.Split(strings.Trim(t, "/"), "/") {
		if seg != "{*}" && !pchar.MatchString(seg) {
			return false
		}
	}
	return true
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
//
// A literal holding a character reserved in AuthorizationPolicy strings is cut before it: the
// prefix up to there is still a superset, and the pattern stays one Istio reads as written.
func superset(expr string) Pattern {
	prefix, complete := regexp.MustCompile(expr).LiteralPrefix()
	if i := strings.IndexAny(prefix, "*{}"); i >= 0 {
		prefix, complete = prefix[:i], false
	}
	if complete {
		return Pattern{Kind: Exact, Literal: prefix}
	}
	if prefix == "" {
		return Pattern{Kind: Presence}
	}
	return Pattern{Kind: Prefix, Literal: prefix}
}
