package regex

import (
	"regexp"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		expr      string
		templates bool
		// ignoreCase: the pattern is compared ignoring ASCII case (hosts).
		ignoreCase bool
		exact      string // "" when inexpressible: then superset is checked
		kind       Kind
		superset   string
	}{
		{expr: "/books-bought", kind: Exact, exact: "/books-bought"},
		{expr: "^/books-bought$", kind: Exact, exact: "/books-bought"},
		{expr: `/api/v1\.0`, kind: Exact, exact: "/api/v1.0"},
		{expr: "bookbuyer", kind: Exact, exact: "bookbuyer"},
		{expr: "/api/.*", kind: Prefix, exact: "/api/*"},
		{expr: "/api/(?s:.)*", kind: Prefix, exact: "/api/*"},
		{expr: `/api/[^\n]*`, kind: Prefix, exact: "/api/*"},
		{expr: ".*\\.css", kind: Suffix, exact: "*.css"},
		{expr: ".*", kind: Presence, exact: "*"},
		{expr: ".*.*", kind: Presence, exact: "*"},
		{expr: "/users/[^/]+/orders", templates: true, kind: Template, exact: "/users/{*}/orders"},
		{expr: "/users/[^/]+", templates: true, kind: Template, exact: "/users/{*}"},
		// Not expressible: the Envoy rung checks the regex, the policy keeps a superset.
		{expr: "/users/[^/]+/orders", superset: "/users/*"},
		{expr: ".*a-book.*new", superset: "*"},
		{expr: ".*-http-client/*.*", superset: "*"},
		{expr: "bookstore.bookstore", superset: "bookstore*"},
		{expr: "/api/v[0-9]+/reviews", superset: "/api/v*"},
		{expr: "(?i)/books", superset: "/*"},
		{expr: "(?i)books", superset: "*"},
		{expr: "/a|/b", superset: "/*"},
		{expr: "a|b", superset: "*"},
		{expr: "/a.+", superset: "/a*"},
		{expr: "/a*", superset: "/*"},
		{expr: "/x{2}", superset: "/xx"},
		{expr: "/users/[^/]+x", templates: true, superset: "/users/*"},
		// Istio rejects a template whose literal segments are empty or hold non-pchar characters.
		{expr: "/users//[^/]+", templates: true, superset: "/users//*"},
		{expr: "/a b/[^/]+", templates: true, superset: "/a b/*"},
		// A reserved character ends the superset's literal (Istio would read it, or reject "{").
		{expr: `/a\{b\}`, superset: "/a*"},
		{expr: `/a\{b\}.*`, superset: "/a*"},
		{expr: `\*b`, superset: "*"},
		{expr: `/a\*b`, superset: "/a*"},
		// Hosts are compared ignoring case: a literal with letters is exact only when the regex is
		// case-insensitive too.
		{expr: `api\.shop`, ignoreCase: true, superset: "api.shop"},
		{expr: `api.*`, ignoreCase: true, superset: "api*"},
		{expr: `(?i)api\.shop`, ignoreCase: true, kind: Exact, exact: "api.shop"},
		{expr: `(?i)API\.Shop(?::[0-9]+)?`, ignoreCase: true, superset: "*"},
		{expr: `(?i).*\.SHOP`, ignoreCase: true, kind: Suffix, exact: "*.shop"},
		{expr: `(?i:api)\.shop`, ignoreCase: true, superset: "*"},
		{expr: `10\.0\.0\.1`, ignoreCase: true, kind: Exact, exact: "10.0.0.1"},
		{expr: `10\.0\..*`, ignoreCase: true, kind: Prefix, exact: "10.0.*"},
	} {
		r, err := Classify(tc.expr, Options{Templates: tc.templates, IgnoreCase: tc.ignoreCase})
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if tc.exact != "" {
			if r.Exact.Kind != tc.kind || r.Exact.String() != tc.exact {
				t.Errorf("%q: exact = %v %q, want %v %q", tc.expr, r.Exact.Kind, r.Exact, tc.kind, tc.exact)
			}
			continue
		}
		if r.Exact.Kind != Inexpressible {
			t.Errorf("%q: classified %v %q, want inexpressible", tc.expr, r.Exact.Kind, r.Exact)
		}
		if r.Superset.String() != tc.superset {
			t.Errorf("%q: superset %q, want %q", tc.expr, r.Superset, tc.superset)
		}
	}
	if _, err := Classify("/api/(v1", Options{}); err == nil {
		t.Error("an invalid regex must be an error")
	}
}

// checkSample asserts the property on one (regex, string) pair: an exact-rung pattern accepts s
// exactly when the regex fully matches it; a superset accepts every s the regex matches.
func checkSample(t *testing.T, expr, s string, opts Options) {
	if strings.ContainsRune(s, '\n') {
		return // not a path or header value
	}
	if _, err := regexp.Compile(expr); err != nil {
		if _, cerr := Classify(expr, opts); cerr == nil {
			t.Fatalf("%q is not a regex but Classify accepted it", expr)
		}
		return
	}
	re, err := FullMatcher(expr)
	if err != nil {
		t.Fatalf("%q compiles but not for full match: %v", expr, err)
	}
	r, err := Classify(expr, opts)
	if err != nil {
		t.Fatalf("%q compiles but Classify fails: %v", expr, err)
	}
	full := re.MatchString(s)
	if opts.IgnoreCase {
		// Under case-insensitive comparison an exact-rung pattern may be narrower than the regex
		// (RE2 folds a few non-ASCII letters Envoy does not), never wider.
		if r.Exact.Kind != Inexpressible && r.Exact.Match(s) && !full {
			t.Fatalf("%q classified %v %q ignoring case: pattern matches %q, the regex does not", expr, r.Exact.Kind, r.Exact, s)
		}
	} else if r.Exact.Kind != Inexpressible && r.Exact.Match(s) != full {
		t.Fatalf("%q classified %v %q: pattern matches %q = %v, regex = %v", expr, r.Exact.Kind, r.Exact, s, r.Exact.Match(s), full)
	}
	if full && !r.Superset.Match(s) {
		t.Fatalf("%q: superset %q misses %q, which the regex matches", expr, r.Superset, s)
	}
}

var seeds = [][2]string{
	{"/books-bought", "/books-bought"}, {"/books-bought", "/books-bought/x"}, {".*a-book.*new", "/buy-a-book/new"},
	{".*-http-client/*.*", "go-http-client/1.1"}, {"/api/.*", "/api/"}, {"/api/.*", "/ap"}, {".*\\.css", "/a.css"},
	{"/users/[^/]+/orders", "/users/7/orders"}, {"/users/[^/]+/orders", "/users//orders"}, {"/users/[^/]+", "/users/a/b"},
	{"bookstore.bookstore", "bookstoreXbookstore"}, {"a*", ""}, {"", ""}, {"x{2}", "xx"}, {"(?i)ab", "AB"},
}

func TestSamples(t *testing.T) {
	for _, s := range seeds {
		for _, templates := range []bool{false, true} {
			checkSample(t, s[0], s[1], Options{Templates: templates})
		}
		checkSample(t, s[0], s[1], Options{IgnoreCase: true})
		checkSample(t, s[0], strings.ToUpper(s[1]), Options{IgnoreCase: true})
	}
}

// FuzzClassify: the emitted pattern matches exactly the strings the regex fully matches, never
// more; the superset never less. Run with `go test ./translate/regex -fuzz FuzzClassify`.
func FuzzClassify(f *testing.F) {
	for _, s := range seeds {
		f.Add(s[0], s[1], false)
		f.Add(s[0], s[1], true)
	}
	f.Fuzz(func(t *testing.T, expr, s string, templates bool) {
		if len(expr) > 64 {
			return
		}
		for _, opts := range []Options{{Templates: templates}, {IgnoreCase: true}} {
			checkSample(t, expr, s, opts)
			// Also probe strings built from the pattern's own literal (and its other cases), where
			// a wrong classification would show.
			if r, err := Classify(expr, opts); err == nil {
				lit := r.Exact.Literal + r.Superset.Literal
				for _, probe := range []string{lit, lit + s, s + lit, r.Exact.Literal, r.Superset.Literal + "/x", strings.ToUpper(lit), strings.ToLower(s)} {
					checkSample(t, expr, probe, opts)
				}
			}
		}
	})
}
