package conversion

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// The partial decoder and the encoder lose nothing: any JSON object comes out meaning the same,
// whichever parts were kept raw.
func FuzzTreeRoundTrip(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"apiVersion":"v","metadata":{"name":"a","labels":{"x":"y"},"annotations":{"k":"v\u00e9\n"}},"status":{"c":[1,2]},"spec":{"a":{"b":{"c":{"d":[1,{"e":null}]}}}}}`,
		`{"matches":[{"headers":[{"a":"b"}],"methods":["GET"]}],"n":-1.5e+3,"t":true,"f":false}`,
		`{"a":"\ud83d\ude00 \"q\" \\ \/ \t","a":2, "b" : [ ] , "c" : { } }`,
		"{\"bad\":\"\xff\xfe\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		var want any
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		if d.Decode(&want) != nil {
			return
		}
		if _, ok := want.(map[string]any); !ok {
			return
		}
		tree, err := decodeTree(data, 0, modeObject)
		if err != nil {
			if errors.Is(err, errTooComplex) {
				return
			}
			t.Fatalf("decode %q: %v", data, err)
		}
		out, err := appendJSON(nil, tree)
		if err != nil {
			t.Fatalf("encode %q: %v", data, err)
		}
		var got any
		d = json.NewDecoder(bytes.NewReader(out))
		d.UseNumber()
		if err := d.Decode(&got); err != nil {
			t.Fatalf("%q encoded as invalid JSON %q: %v", data, out, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q came out as %q", data, out)
		}
		if !equal(tree, copyTree(tree)) {
			t.Fatalf("a copy of %q differs", data)
		}
		var sb bytes.Buffer
		if err := writeJSON(&sb, tree); err != nil || !bytes.Equal(sb.Bytes(), out) {
			t.Fatalf("writeJSON %q = %q, appendJSON %q (%v)", data, sb.Bytes(), out, err)
		}
	})
}
