package conversion

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// An object is decoded only as deep as the conversion looks: what it moves or drops whole stays
// raw, the bytes of the input. A decoded value costs tens of bytes of heap per byte of JSON (a
// 1.4 MiB HTTPRouteGroup of small headers decoded whole took about 99 MiB per conversion); a raw
// one costs nothing beyond the input it points into.
//
//   - Containers nested rawDepth deep or deeper (counted from the object, whose fields are at depth
//     1) are raw: the deepest container a conversion step opens is a TrafficSplit backend or an
//     HTTPRouteGroup match (spec.backends[i], spec.matches[i], at depth 3).
//   - "headers" (which preserves unknown fields), "status" and every metadata field but name,
//     namespace and annotations are raw wherever they are.
//   - At most maxValues values are decoded per object (and as many again for its conversion
//     annotation); an object with more fails to convert.
const (
	rawDepth  = 4
	maxValues = 1 << 15
)

// raw is a JSON value kept as its bytes: never decoded, never changed.
type raw []byte

// errTooComplex is the error of an object with more than maxValues decoded values.
var errTooComplex = fmt.Errorf("more than %d values outside its headers, metadata and status", maxValues)

type decodeMode int

const (
	modeObject   decodeMode = iota // the object itself: metadata and status are special
	modeMetadata                   // name, namespace and annotations decoded, the rest raw
	modeContent                    // decoded to rawDepth, headers raw
)

type parser struct {
	data   []byte
	pos    int
	values int
}

// decodeTree decodes one object (or the content saved in a conversion annotation, with depth -1 so
// that the content is at depth 0).
func decodeTree(data []byte, depth int, mode decodeMode) (any, error) {
	if !json.Valid(data) {
		// json.Valid checks the syntax and encoding/json's nesting limit without allocating; the
		// parser below can then trust the structure.
		var v any
		err := json.Unmarshal(data, &v)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return nil, err
	}
	p := &parser{data: data}
	v, err := p.value(depth, mode)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) count() error {
	p.values++
	if p.values > maxValues {
		return errTooComplex
	}
	return nil
}

func (p *parser) value(depth int, mode decodeMode) (any, error) {
	p.skipSpace()
	if p.pos >= len(p.data) {
		return nil, errors.New("unexpected end of JSON")
	}
	if err := p.count(); err != nil {
		return nil, err
	}
	switch c := p.data[p.pos]; {
	case c == '{' && depth >= rawDepth, c == '[' && depth >= rawDepth:
		return p.raw()
	case c == '{':
		return p.object(depth, mode)
	case c == '[':
		return p.array(depth, mode)
	case c == '"':
		return p.str()
	case c == 't':
		p.pos += 4
		return true, nil
	case c == 'f':
		p.pos += 5
		return false, nil
	case c == 'n':
		p.pos += 4
		return nil, nil
	default:
		start := p.pos
		for p.pos < len(p.data) && strings.IndexByte("+-0123456789.eE", p.data[p.pos]) >= 0 {
			p.pos++
		}
		if p.pos == start {
			return nil, fmt.Errorf("unexpected %q at offset %d", c, start)
		}
		return json.Number(p.data[start:p.pos]), nil
	}
}

func (p *parser) object(depth int, mode decodeMode) (any, error) {
	p.pos++ // {
	out := object{}
	for {
		p.skipSpace()
		if p.pos < len(p.data) && p.data[p.pos] == '}' {
			p.pos++
			return out, nil
		}
		if p.pos < len(p.data) && p.data[p.pos] == ',' {
			p.pos++
			p.skipSpace()
		}
		key, err := p.str()
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		p.pos++ // :
		p.skipSpace()
		var v any
		switch {
		case mode == modeObject && key == "metadata":
			v, err = p.value(depth+1, modeMetadata)
		case mode == modeObject && key == "status",
			mode == modeMetadata && key != "name" && key != "namespace" && key != "annotations",
			key == "headers":
			if err = p.count(); err == nil {
				v, err = p.raw()
			}
		default:
			v, err = p.value(depth+1, modeContent)
		}
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
}

func (p *parser) array(depth int, mode decodeMode) (any, error) {
	p.pos++ // [
	out := []any{}
	for {
		p.skipSpace()
		if p.pos < len(p.data) && p.data[p.pos] == ']' {
			p.pos++
			return out, nil
		}
		if p.pos < len(p.data) && p.data[p.pos] == ',' {
			p.pos++
		}
		v, err := p.value(depth+1, mode)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
}

// str reads a string; only one with escapes is decoded by encoding/json.
func (p *parser) str() (string, error) {
	if p.pos >= len(p.data) || p.data[p.pos] != '"' {
		return "", fmt.Errorf("want a string at offset %d", p.pos)
	}
	start, escaped := p.pos, false
	for p.pos++; p.pos < len(p.data); p.pos++ {
		switch p.data[p.pos] {
		case '\\':
			escaped = true
			p.pos++
		case '"':
			p.pos++
			if !escaped && utf8.Valid(p.data[start+1:p.pos-1]) {
				return string(p.data[start+1 : p.pos-1]), nil
			}
			var s string
			err := json.Unmarshal(p.data[start:p.pos], &s)
			return s, err
		}
	}
	return "", errors.New("unterminated string")
}

// raw skips one value and returns its bytes (the input was validated by json.Valid).
func (p *parser) raw() (raw, error) {
	p.skipSpace()
	start := p.pos
	if p.pos >= len(p.data) {
		return nil, errors.New("unexpected end of JSON")
	}
	switch p.data[p.pos] {
	case '"':
		if !p.skipString() {
			return nil, errors.New("unterminated string")
		}
		return raw(p.data[start:p.pos]), nil
	case '{', '[':
		nesting := 0
		for p.pos < len(p.data) {
			switch p.data[p.pos] {
			case '"':
				if !p.skipString() {
					return nil, errors.New("unterminated string")
				}
				continue
			case '{', '[':
				nesting++
			case '}', ']':
				nesting--
				if nesting == 0 {
					p.pos++
					return raw(p.data[start:p.pos]), nil
				}
			}
			p.pos++
		}
		return nil, errors.New("unexpected end of JSON")
	default: // a number or a literal
		for p.pos < len(p.data) && !strings.ContainsRune(",}] \t\n\r", rune(p.data[p.pos])) {
			p.pos++
		}
		return raw(p.data[start:p.pos]), nil
	}
}

// skipString moves past the string at pos; false when it is unterminated.
func (p *parser) skipString() bool {
	for p.pos++; p.pos < len(p.data); p.pos++ {
		switch p.data[p.pos] {
		case '\\':
			p.pos++
		case '"':
			p.pos++
			return true
		}
	}
	return false
}

// copyTree copies the maps and lists of a tree; strings, numbers and raw values are shared (never
// changed in place).
func copyTree(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = copyTree(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = copyTree(e)
		}
		return out
	default:
		return v
	}
}

// appendJSON appends a tree's JSON: keys sorted, raw values as they came.
func appendJSON(b []byte, v any) ([]byte, error) {
	e := encoder{b: b}
	err := e.value(v)
	return e.b, err
}

// writeJSON writes a tree's JSON to w without holding it whole: raw values go straight to w, long
// strings in pieces.
func writeJSON(w io.Writer, v any) error {
	e := newEncoder(w)
	defer e.release()
	if err := e.value(v); err != nil {
		return err
	}
	return e.flush()
}

// bufferBytes is the buffer an encoder writes through (flushed when half full). Buffers are reused:
// the apiserver sends a review per object it converts, and a buffer allocated for each answer (32
// KiB) and for each annotation written (4 KiB, twice) came to about a quarter of all the operator
// allocated in an L run (1.7 and 0.36 of 7.9 GB in the tenth round's heap profile,
// docs/benchmarks.md).
const bufferBytes = 32 << 10

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, bufferBytes); return &b }}

// newEncoder is an encoder writing to w through a reused buffer; release gives the buffer back.
func newEncoder(w io.Writer) *encoder {
	bp := buffers.Get().(*[]byte)
	return &encoder{w: w, b: (*bp)[:0], pooled: bp}
}

// release gives the buffer newEncoder took back for reuse. When b outgrew it, append moved b to a
// new array: the buffer itself is no longer referenced and is given back all the same.
func (e *encoder) release() {
	if e.pooled != nil {
		*e.pooled = (*e.pooled)[:0]
		buffers.Put(e.pooled)
	}
	e.pooled, e.b = nil, nil
}

// encoder appends JSON to b and, when w is set, writes it out as b grows.
type encoder struct {
	b      []byte
	w      io.Writer
	err    error
	pooled *[]byte // where b came from (newEncoder)
}

func (e *encoder) flush() error {
	if e.w != nil && len(e.b) > 0 && e.err == nil {
		_, e.err = e.w.Write(e.b)
		e.b = e.b[:0]
	}
	return e.err
}

// string appends a JSON string, in pieces of at most 16 KiB when writing to w.
func (e *encoder) string(s string) {
	const piece = 16 << 10
	if e.w == nil || len(s) <= piece {
		e.b = appendString(e.b, s)
		return
	}
	e.b = append(e.b, '"')
	for len(s) > 0 {
		n := min(piece, len(s))
		for n < len(s) && !utf8.RuneStart(s[n]) {
			n++
		}
		e.b = appendEscaped(e.b, s[:n])
		s = s[n:]
		if e.flush() != nil {
			return
		}
	}
	e.b = append(e.b, '"')
}

func (e *encoder) value(v any) error {
	switch t := v.(type) {
	case nil:
		e.b = append(e.b, "null"...)
	case bool:
		e.b = strconv.AppendBool(e.b, t)
	case string:
		e.string(t)
	case json.Number:
		if t == "" {
			t = "0"
		}
		e.b = append(e.b, t...)
	case raw:
		if e.w != nil && len(t) > cap(e.b)-len(e.b) {
			if e.flush() == nil {
				_, e.err = e.w.Write(t)
			}
			return e.err
		}
		e.b = append(e.b, t...)
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		e.b = append(e.b, '{')
		for i, k := range keys {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			e.b = appendString(e.b, k)
			e.b = append(e.b, ':')
			if err := e.value(t[k]); err != nil {
				return err
			}
		}
		e.b = append(e.b, '}')
	case []any:
		e.b = append(e.b, '[')
		for i, el := range t {
			if i > 0 {
				e.b = append(e.b, ',')
			}
			if err := e.value(el); err != nil {
				return err
			}
		}
		e.b = append(e.b, ']')
	default:
		data, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %T: %w", v, err)
		}
		e.b = append(e.b, data...)
	}
	if e.w != nil && len(e.b) >= cap(e.b)/2 {
		return e.flush()
	}
	return e.err
}

// appendString appends s as a JSON string (invalid UTF-8 becomes U+FFFD, as encoding/json does).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendEscaped appends the inside of s as a JSON string.
func appendEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

// jsonString encodes a tree into a string of exactly its size (counted first), without a copy.
func jsonString(v any) (string, error) {
	var n countingWriter
	if err := writeJSON(&n, v); err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.Grow(int(n))
	if err := writeJSON(&sb, v); err != nil {
		return "", err
	}
	return sb.String(), nil
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}

// maxSemanticCompare bounds the raw values compared by meaning when their bytes differ (they come
// from the same apiserver encoding, so in practice they never do); larger ones count as different,
// which only keeps or writes a conversion annotation that was not needed.
const maxSemanticCompare = 64 << 10

// equal compares trees: numbers by their decimal text, raw values by their bytes or, when those
// differ, by meaning.
func equal(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		if y, ok := b.(map[string]any); ok {
			if len(x) != len(y) {
				return false
			}
			for k, v := range x {
				w, ok := y[k]
				if !ok || !equal(v, w) {
					return false
				}
			}
			return true
		}
	case []any:
		if y, ok := b.([]any); ok {
			if len(x) != len(y) {
				return false
			}
			for i := range x {
				if !equal(x[i], y[i]) {
					return false
				}
			}
			return true
		}
	case raw:
		if y, ok := b.(raw); ok && bytes.Equal(x, y) {
			return true
		}
	default:
		if _, ok := b.(raw); !ok {
			return a == b
		}
	}
	// A raw value on one side or both: compare the JSON.
	ja, err := appendJSON(nil, a)
	if err != nil {
		return false
	}
	jb, err := appendJSON(nil, b)
	if err != nil {
		return false
	}
	if bytes.Equal(ja, jb) {
		return true
	}
	if len(ja)+len(jb) > maxSemanticCompare {
		return false
	}
	return sameJSON(ja, jb)
}

func sameJSON(a, b []byte) bool {
	var va, vb any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&va) != nil || db.Decode(&vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}
