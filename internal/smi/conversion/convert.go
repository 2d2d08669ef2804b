// Package conversion converts SMI objects between API versions without loss and serves that as
// the CRDs' conversion webhook.
//
// Each kind maps every version to a hub shape and back. Where a hop would drop information (a
// TrafficSplit's matches read as v1alpha2, a v1alpha1 weight written as "1000m"), the content as
// last written is kept in the AnnotationKey annotation and restored when the object is read in that
// version again, provided the object has not changed since.
package conversion

import (
	"fmt"
	"strings"
)

// AnnotationKey holds the content of an object as written in a version that another version cannot
// represent exactly: {"apiVersion": ..., "content": {...}}.
const AnnotationKey = "smi2istio.io/conversion-data"

type savedContent struct {
	APIVersion string
	Content    object
	version    string
}

// Convert converts one SMI object (JSON) to the given apiVersion and returns its JSON.
func Convert(raw []byte, toAPIVersion string) ([]byte, error) {
	out, _, err := convert(raw, toAPIVersion)
	return out, err
}

// convert is Convert that also returns the apiVersion the object came in.
func convert(raw []byte, toAPIVersion string) ([]byte, string, error) {
	out, from, err := convertTree(raw, toAPIVersion)
	if err != nil {
		return nil, from, err
	}
	raw, err = appendJSON(make([]byte, 0, len(raw)+len(raw)/8), out)
	return raw, from, err
}

// convertTree converts one object and returns its tree (which may share the bytes of raw).
func convertTree(raw []byte, toAPIVersion string) (object, string, error) {
	obj, err := decode(raw)
	if err != nil {
		return nil, "", err
	}
	from, _ := obj["apiVersion"].(string)
	out, err := convertObject(obj, toAPIVersion)
	if err != nil {
		return nil, from, fmt.Errorf("convert %s %s to %s: %w", obj["kind"], describe(obj), toAPIVersion, err)
	}
	return out, from, nil
}

func describe(obj object) string {
	md := asMap(obj["metadata"])
	if ns, _ := md["namespace"].(string); ns != "" {
		return fmt.Sprintf("%s/%s", ns, md["name"])
	}
	name, _ := md["name"].(string)
	return name
}

func convertObject(obj object, toAPIVersion string) (object, error) {
	fromAPIVersion, _ := obj["apiVersion"].(string)
	group, from, ok := strings.Cut(fromAPIVersion, "/")
	if !ok {
		return nil, fmt.Errorf("apiVersion %q has no group", fromAPIVersion)
	}
	toGroup, to, ok := strings.Cut(toAPIVersion, "/")
	if !ok || toGroup != group {
		return nil, fmt.Errorf("cannot convert between groups %q and %q", group, toGroup)
	}
	kindName, _ := obj["kind"].(string)
	k, ok := kinds[group+"/"+kindName]
	if !ok {
		return nil, fmt.Errorf("unknown kind %s in group %s", kindName, group)
	}
	if !k.serves(from) || !k.serves(to) {
		return nil, fmt.Errorf("%s has versions %v", kindName, k.versions)
	}

	content := contentOf(obj)
	var converted object
	var err error
	written := writtenContent(k, obj, content, group, from)
	if written != nil {
		// The object was written in another version that carries more: convert from that.
		if converted, err = k.convert(written.Content, written.version, to); err != nil {
			return nil, err
		}
		if written.version == to {
			written = nil // read again in the version it was written in: restored exactly
		}
	} else {
		if converted, err = k.convert(content, from, to); err != nil {
			return nil, err
		}
		// Keep what this hop cannot carry, so that reading in `from` again gives it back.
		back, err := k.convert(converted, to, from)
		if err != nil {
			return nil, err
		}
		if !equal(back, content) {
			written = &savedContent{APIVersion: fromAPIVersion, Content: content, version: from}
		}
	}

	out := object{}
	for key, v := range obj {
		if key == "apiVersion" || key == "kind" || key == "metadata" || key == "status" {
			out[key] = v
		}
	}
	for key, v := range converted {
		out[key] = v
	}
	out["apiVersion"] = toAPIVersion
	return out, setAnnotation(out, written)
}

// contentOf returns the object minus apiVersion, kind, metadata and status: the part that differs
// between versions.
func contentOf(obj object) object {
	c := object{}
	for k, v := range obj {
		switch k {
		case "apiVersion", "kind", "metadata", "status":
		default:
			c[k] = v
		}
	}
	return c
}

// writtenContent returns the content saved in the annotation if it still describes the object
// (converting it to the current version gives the current content), nil otherwise.
func writtenContent(k kind, obj, content object, group, current string) *savedContent {
	raw, ok := asMap(asMap(obj["metadata"])["annotations"])[AnnotationKey].(string)
	if !ok {
		return nil
	}
	saved, err := decodeTree([]byte(raw), -1, modeContent)
	if err != nil {
		return nil
	}
	var s savedContent
	s.APIVersion, _ = asMap(saved)["apiVersion"].(string)
	if s.Content = asMap(asMap(saved)["content"]); s.Content == nil {
		return nil
	}
	g, v, ok := strings.Cut(s.APIVersion, "/")
	if !ok || g != group || !k.serves(v) {
		return nil
	}
	now, err := k.convert(s.Content, v, current)
	if err != nil || !equal(now, content) {
		return nil // stale: the object changed since it was written in that version
	}
	s.version = v
	return &s
}

// setAnnotation records (or, when s is nil, removes) the written content on the object.
func setAnnotation(obj object, s *savedContent) error {
	md := asMap(obj["metadata"])
	if md == nil {
		md = object{}
		obj["metadata"] = md
	}
	annotations := asMap(md["annotations"])
	if s == nil {
		if _, ok := annotations[AnnotationKey]; ok {
			delete(annotations, AnnotationKey)
			if len(annotations) == 0 {
				delete(md, "annotations")
			}
		}
		return nil
	}
	raw, err := jsonString(object{"apiVersion": s.APIVersion, "content": s.Content})
	if err != nil {
		return fmt.Errorf("encode %s: %w", AnnotationKey, err)
	}
	if annotations == nil {
		annotations = object{}
		md["annotations"] = annotations
	}
	annotations[AnnotationKey] = raw
	return nil
}

// decode decodes an object as far as the conversion looks into it (see tree.go).
func decode(raw []byte) (object, error) {
	v, err := decodeTree(raw, 0, modeObject)
	if err != nil {
		return nil, fmt.Errorf("decode object: %w", err)
	}
	o, ok := v.(map[string]any)
	if !ok || o == nil {
		return nil, fmt.Errorf("decode object: not a JSON object")
	}
	return o, nil
}

func deepCopy(o object) object { return copyTree(o).(map[string]any) }
