// Command build-installer writes dist/install.yaml: config/default rendered by kustomize, with the
// manager image set.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/smi2istio/smi2istio/internal/build/install"
)

func main() {
	dir := flag.String("dir", "config/default", "kustomization to build")
	out := flag.String("out", "dist/install.yaml", "where to write the manifest")
	image := flag.String("image", "", "manager image (default: the one in config/manager)")
	flag.Parse()
	data, err := install.Render(*dir)
	if err == nil && *image != "" {
		data, err = install.WithImage(data, *image)
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(*out), 0o755)
	}
	if err == nil {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Println(strings.TrimSpace(*out))
}
