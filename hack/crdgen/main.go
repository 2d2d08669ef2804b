// Command crdgen writes the SMI CRDs defined in internal/smi/crds to config/crd/bases.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/smi2istio/smi2istio/internal/smi/crds"
)

func main() {
	out := flag.String("out", "config/crd/bases", "directory to write the CRD manifests to")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, c := range crds.All() {
		data, err := crds.Marshal(c)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := os.WriteFile(filepath.Join(*out, crds.FileName(c)), data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
