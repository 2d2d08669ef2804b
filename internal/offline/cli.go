package offline

import (
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/smi2istio/smi2istio/internal/manifests"
	"github.com/smi2istio/smi2istio/translate"
)

type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// Main runs `smi2istio translate`: Istio YAML on stdout, the fidelity report on stderr. It exits 1
// when an object cannot be translated or the input cannot be read, 2 on usage errors.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("translate", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var files fileList
	fset.Var(&files, "f", "SMI and Service manifests: a file, a directory (read recursively) or - for stdin; repeatable")
	domain := fset.String("cluster-domain", "cluster.local", "DNS suffix of the cluster's Services")
	fset.Usage = func() {
		fmt.Fprintln(stderr, "usage: smi2istio translate -f <file|dir|-> [-f ...] [--cluster-domain cluster.local]")
		fmt.Fprintln(stderr, "Prints the Istio objects the operator would apply for the SMI objects in the input,")
		fmt.Fprintln(stderr, "and a fidelity report on stderr: one line per finding (object: field: reason: message).")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return 2
	}
	if len(files) == 0 || fset.NArg() > 0 {
		fset.Usage()
		return 2
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		got, err := read(f, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
			return 1
		}
		objs = append(objs, got...)
	}
	set, err := Load(objs)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	manifests, report, failed, err := Render(set.Translate(translate.Mesh{ClusterDomain: *domain}))
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	for _, line := range report {
		fmt.Fprintln(stderr, line)
	}
	if _, err := stdout.Write(manifests); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "error: %d object(s) could not be translated\n", failed)
		return 1
	}
	return 0
}

func read(path string, stdin io.Reader) ([]*unstructured.Unstructured, error) {
	if path == "-" {
		data, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		objs, err := Decode(data)
		if err != nil {
			return nil, fmt.Errorf("stdin: %w", err)
		}
		return objs, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if info.IsDir() {
		files = nil
		err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					files = append(files, p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		objs, err := manifests.ReadFile(f)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}
