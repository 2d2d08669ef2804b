// Package manifests reads multi-document YAML (or JSON) manifests into objects.
package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Decode splits multi-document YAML into objects, skipping empty documents; every object needs an
// apiVersion and a kind.
func Decode(data []byte) ([]*unstructured.Unstructured, error) { return decode(data, false) }

// DecodeStrict is Decode that also rejects a document with a duplicate key, as the apiserver's
// strict field validation (kubectl apply's default) does (which of the two values a reader keeps
// is not something a user should have to guess), and reads the items of a List, as kubectl does.
func DecodeStrict(data []byte) ([]*unstructured.Unstructured, error) { return decode(data, true) }

func decode(data []byte, strict bool) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*unstructured.Unstructured
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if strict {
			if _, err := yaml.YAMLToJSONStrict(doc); err != nil {
				return nil, fmt.Errorf("document %d: %w", i, err)
			}
		}
		u := &unstructured.Unstructured{}
		// Integers decode as int64, as in objects read from the apiserver.
		if err := utilyaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document %d: apiVersion and kind are required", i)
		}
		if strict && u.IsList() {
			// A List (kubectl get -o yaml): kubectl apply applies its items.
			list, err := u.ToList()
			if err != nil {
				return nil, fmt.Errorf("document %d: %w", i, err)
			}
			for j := range list.Items {
				item := &list.Items[j]
				if item.GetKind() == "" || item.GetAPIVersion() == "" {
					return nil, fmt.Errorf("document %d: items[%d]: apiVersion and kind are required", i, j)
				}
				out = append(out, item)
			}
			continue
		}
		out = append(out, u)
	}
}

// ReadFile decodes every document of a file.
func ReadFile(path string) ([]*unstructured.Unstructured, error) { return readFile(path, Decode) }

// ReadFileStrict decodes every document of a file with DecodeStrict.
func ReadFileStrict(path string) ([]*unstructured.Unstructured, error) {
	return readFile(path, DecodeStrict)
}

func readFile(path string, decode func([]byte) ([]*unstructured.Unstructured, error)) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	objs, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return objs, nil
}
