package regex

import (
	"regexp/syntax"
	"unicode/utf8"
)

// RE2ProgramLimit is the largest RE2 program Istio's Envoy accepts in a regex
// (re2.max_program_size.error_level in Istio's bootstrap): a listener with a larger one is
// rejected and the sidecar keeps its previous configuration, so later revocations would never
// take effect.
const RE2ProgramLimit = 32768

// RE2ProgramSizeBound is an upper bound of the size of the program RE2 (C++) compiles for a
// regex, so that what is emitted stays under RE2ProgramLimit. RE2 compiles to a UTF-8 byte
// automaton: a non-ASCII class costs instructions per UTF-8 range, a counted repetition copies its
// operand, case folding doubles a literal. The bound over-estimates each of these.
func RE2ProgramSizeBound(expr string) (int, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return 0, err
	}
	return sizeBound(re.Simplify()), nil
}

func sizeBound(re *syntax.Regexp) int {
	const most = 1 << 30 // saturate instead of overflowing
	sum := func(subs []*syntax.Regexp) int {
		n := 0
		for _, s := range subs {
			n += sizeBound(s)
			if n > most {
				return most
			}
		}
		return n
	}
	switch re.Op {
	case syntax.OpLiteral:
		n := 0
		for _, r := range re.Rune {
			n += utf8.RuneLen(r) + 1
		}
		if re.Flags&syntax.FoldCase != 0 {
			n *= 4
		}
		return n + 1
	case syntax.OpCharClass:
		n := 2
		for i := 0; i+1 < len(re.Rune); i += 2 {
			lo, hi := re.Rune[i], re.Rune[i+1]
			if hi < utf8.RuneSelf {
				n += 2
				continue
			}
			// A range over multi-byte code points splits into UTF-8 byte ranges: up to a few per
			// length class and leading byte; bound it by 16 per range plus its span in 64-blocks.
			span := int(hi-lo)/64 + 1
			if span > 64 {
				span = 64
			}
			n += 16 + 4*span
		}
		return n
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
		return 32
	case syntax.OpCapture:
		return sizeBound(re.Sub[0]) + 2
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		return sizeBound(re.Sub[0]) + 2
	case syntax.OpRepeat:
		times := re.Max
		if times < 0 {
			times = re.Min + 1
		}
		n := sizeBound(re.Sub[0])
		if times > 0 && n > most/times {
			return most
		}
		return n*times + 2
	case syntax.OpConcat:
		return sum(re.Sub) + 1
	case syntax.OpAlternate:
		return sum(re.Sub) + 2*len(re.Sub)
	default: // empty match, anchors, word boundaries, no match
		return 2
	}
}
