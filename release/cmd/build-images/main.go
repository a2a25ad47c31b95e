// Command build-images packages the built autoglm-sidecar and autoglm-xds
// binaries as OCI images (release/image) into one OCI image layout, and
// pushes them with -push. It prints each image's reference and digest.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/open-autoglm/autoglm/internal/cli"
	"github.com/open-autoglm/autoglm/release/image"
)

func main() {
	fs := flag.NewFlagSet("build-images", flag.ContinueOnError)
	bin := fs.String("bin", "bin/image", "directory holding the linux binaries autoglm-sidecar and autoglm-xds")
	out := fs.String("out", "bin/images", "OCI image layout directory to write (replaced)")
	version := fs.String("version", "dev", "image tag and org.opencontainers.image.version")
	revision := fs.String("revision", "", "VCS revision for org.opencontainers.image.revision")
	repo := fs.String("repo", "ghcr.io/open-autoglm", "image repository prefix: REPO/autoglm-sidecar:VERSION")
	push := fs.Bool("push", false, "push the images to REPO (credentials from the Docker config)")
	created := fs.String("created", "", "creation time of the images and their files (RFC 3339); default $SOURCE_DATE_EPOCH, else 2026-01-01T00:00:00Z: fixed, so builds are reproducible")
	if code, ok := cli.Parse(fs, os.Args[1:]); !ok {
		os.Exit(code)
	}
	if err := run(*bin, *out, *version, *revision, *repo, *created, *push); err != nil {
		fmt.Fprintln(os.Stderr, "build-images:", err)
		os.Exit(1)
	}
}

func run(bin, out, version, revision, repo, created string, push bool) error {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	switch {
	case created != "":
		t, err := time.Parse(time.RFC3339, created)
		if err != nil {
			return fmt.Errorf("-created: %w", err)
		}
		at = t
	case os.Getenv("SOURCE_DATE_EPOCH") != "":
		s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		at = time.Unix(s, 0)
	}
	imgs := map[string]v1.Image{}
	for _, c := range []struct {
		name  string
		ports []string
	}{{"autoglm-sidecar", []string{"8080/tcp", "9090/tcp"}}, {"autoglm-xds", []string{"18000/tcp", "18001/tcp"}}} {
		labels := map[string]string{
			"org.opencontainers.image.title":    c.name,
			"org.opencontainers.image.source":   "https://github.com/open-autoglm/autoglm",
			"org.opencontainers.image.version":  version,
			"org.opencontainers.image.licenses": "Apache-2.0",
		}
		if revision != "" {
			labels["org.opencontainers.image.revision"] = revision
		}
		img, err := image.Build(image.Spec{Binary: filepath.Join(bin, c.name), Name: c.name, Created: at,
			CACerts: "/etc/ssl/certs/ca-certificates.crt", Labels: labels, Ports: c.ports})
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		ref := repo + "/" + c.name + ":" + version
		imgs[ref] = img
		d, err := img.Digest()
		if err != nil {
			return err
		}
		fmt.Printf("%s@%s\n", ref, d)
		if push {
			r, err := name.ParseReference(ref)
			if err != nil {
				return err
			}
			if err := remote.Write(r, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
				return fmt.Errorf("push %s: %w", ref, err)
			}
		}
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	return image.WriteLayout(out, imgs)
}
