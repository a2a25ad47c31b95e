// Command filter-image packages autoglm-filter.wasm as the OCI image
// Istio's WasmPlugin pulls, into an OCI layout directory, and pushes it
// with -push. It prints the digest to put in the WasmPlugin's sha256.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/open-autoglm/autoglm/filter/image"
)

func main() {
	wasm := flag.String("wasm", "bin/autoglm-filter.wasm", "the compiled filter")
	out := flag.String("out", "bin/autoglm-filter-oci", "OCI image layout directory to write (replaced)")
	push := flag.String("push", "", "also push to this reference, e.g. ghcr.io/org/autoglm-filter:0.1.0 (credentials from the Docker config)")
	created := flag.String("created", "2026-01-01T00:00:00Z", "image creation time (RFC 3339): fixed, so that builds are reproducible")
	flag.Parse()
	if err := run(*wasm, *out, *push, *created); err != nil {
		fmt.Fprintln(os.Stderr, "filter-image:", err)
		os.Exit(1)
	}
}

func run(wasmPath, out, push, created string) error {
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		return err
	}
	at, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return fmt.Errorf("-created: %w", err)
	}
	img, err := image.Build(wasm, at)
	if err != nil {
		return fmt.Errorf("%s: %w", wasmPath, err)
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := image.WriteLayout(out, img); err != nil {
		return err
	}
	if push != "" {
		ref, err := name.ParseReference(push)
		if err != nil {
			return fmt.Errorf("-push: %w", err)
		}
		if err := remote.Write(ref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
	}
	desc, err := image.Describe(img)
	if err != nil {
		return err
	}
	fmt.Println(desc)
	return nil
}
