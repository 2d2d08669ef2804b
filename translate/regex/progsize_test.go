package regex

import "testing"

// The bound is above RE2's real program sizes (measured with libre2 2022-06-01 by the red team:
// `/\pL{40}` 47,724, `/(?i)\pL{100}` 119,404, 34 alternatives of `x{1000}` 40,004) and keeps the
// regexes of OSM's demos and the golden cases well under the limit.
func TestRE2ProgramSizeBound(t *testing.T) {
	for _, c := range []struct {
		expr  string
		over  bool
		limit int
	}{
		{`/\pL{40}`, true, 47724},
		{`/(?i)\pL{100}`, true, 119404},
		{`a{1000}|b{1000}|c{1000}|d{1000}|e{1000}|f{1000}|g{1000}|h{1000}|i{1000}|j{1000}|k{1000}|l{1000}|m{1000}|n{1000}|o{1000}|p{1000}|q{1000}|r{1000}|s{1000}|t{1000}|u{1000}|v{1000}|w{1000}|x{1000}|y{1000}|z{1000}|A{1000}|B{1000}|C{1000}|D{1000}|E{1000}|F{1000}|G{1000}|H{1000}`, true, 40004},
		{`.*a-book.*new`, false, 0},
		{`/books-bought`, false, 0},
		{`/api/orders/[0-9]+`, false, 0},
		{`/api/orders/[^/]+/items`, false, 0},
		{`(?i)api\.shop`, false, 0},
		{`.*-http-client/.*`, false, 0},
	} {
		n, err := RE2ProgramSizeBound(c.expr)
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		if c.over && (n < c.limit || n <= RE2ProgramLimit) {
			t.Errorf("%.40s: bound %d is below RE2's %d or the limit %d", c.expr, n, c.limit, RE2ProgramLimit)
		}
		if !c.over && n > RE2ProgramLimit/8 {
			t.Errorf("%s: bound %d, want a small regex to stay far under the limit", c.expr, n)
		}
	}
}
