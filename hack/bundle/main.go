// Command bundle writes the OLM bundle to bundle/ and bundle.Dockerfile (see internal/build/bundle).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/smi2istio/smi2istio/internal/build/bundle"
)

func main() {
	version := flag.String("version", "0.1.0", "operator version")
	image := flag.String("image", "ghcr.io/smi2istio/smi2istio:0.1.0", "manager image")
	flag.Parse()
	if err := run(*version, *image); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(version, image string) error {
	files, err := bundle.Build(".", version, image)
	if err != nil {
		return err
	}
	if err := os.RemoveAll("bundle"); err != nil {
		return err
	}
	for path, data := range files {
		p := filepath.Join("bundle", path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile("bundle.Dockerfile", bundle.Dockerfile(), 0o644)
}
