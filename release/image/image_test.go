package image

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// build compiles a binary as `make images` does (-trimpath; cgo on for
// the sidecar, off for autoglm-xds).
func build(t *testing.T, pkg string, cgo bool) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "github.com/open-autoglm/autoglm/"+pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+map[bool]string{true: "1", false: "0"}[cgo])
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// TestImages builds the images of both binaries, writes them as an OCI
// layout, reads the layout back, and checks each as a container runtime
// would use it: a non-root user, the entrypoint, CA certificates, and a
// binary that runs — the dynamically linked sidecar through the loader
// and libraries in its own image, not the machine's. Building again gives
// the same digests. Like make test, it runs on Linux (the images hold
// Linux binaries built on this machine).
func TestImages(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bins := map[string]string{
		"autoglm-sidecar": build(t, "sidecar/cmd/autoglm-sidecar", true),
		"autoglm-xds":     build(t, "xds/cmd/autoglm-xds", false),
	}
	spec := func(n string) Spec {
		return Spec{Binary: bins[n], Name: n, Created: created, CACerts: "/etc/ssl/certs/ca-certificates.crt",
			Labels: map[string]string{"org.opencontainers.image.version": "test"}, Ports: []string{"8080/tcp"}}
	}
	dir := filepath.Join(t.TempDir(), "oci")
	first := map[string]string{}
	built := map[string]Spec{}
	for n := range bins {
		built["example.org/"+n+":test"] = spec(n)
	}
	all := map[string]v1.Image{}
	for ref, s := range built {
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		first[ref] = d.String()
		all[ref] = img
	}
	if err := WriteLayout(dir, all); err != nil {
		t.Fatal(err)
	}
	read, err := ReadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(read) != 2 {
		t.Fatalf("layout holds %d images", len(read))
	}
	for ref, img := range read {
		name := strings.TrimSuffix(strings.TrimPrefix(ref, "example.org/"), ":test")
		d, _ := img.Digest()
		if d.String() != first[ref] {
			t.Errorf("%s: digest %s in the layout, %s built", ref, d, first[ref])
		}
		again, err := Build(spec(name))
		if err != nil {
			t.Fatal(err)
		}
		if d2, _ := again.Digest(); d2 != d {
			t.Errorf("%s: built twice, digests %s and %s", name, d, d2)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cfg.Config
		if c.User != "65532:65532" || len(c.Entrypoint) != 1 || c.Entrypoint[0] != "/usr/local/bin/"+name || cfg.OS != "linux" ||
			cfg.Architecture != runtime.GOARCH || !cfg.Created.Time.Equal(created) || c.Labels["org.opencontainers.image.version"] != "test" {
			t.Errorf("%s: config %+v (os %s arch %s created %v)", name, c, cfg.OS, cfg.Architecture, cfg.Created)
		}
		root := filepath.Join(t.TempDir(), "rootfs")
		if err := Extract(img, root); err != nil {
			t.Fatal(err)
		}
		ca, err := os.ReadFile(filepath.Join(root, "etc/ssl/certs/ca-certificates.crt"))
		if err != nil || !strings.Contains(string(ca), "BEGIN CERTIFICATE") {
			t.Errorf("%s: no CA certificates (%v)", name, err)
		}
		if pw, _ := os.ReadFile(filepath.Join(root, "etc/passwd")); !strings.Contains(string(pw), "nonroot:x:65532:65532:") {
			t.Errorf("%s: /etc/passwd %q", name, pw)
		}
		// Run the binary as the image has it. A dynamically linked one
		// through the image's own loader and libraries only.
		entry := filepath.Join(root, c.Entrypoint[0])
		args := []string{entry, "version"}
		libs, _ := filepath.Glob(filepath.Join(root, "lib64", "ld-linux-*.so*"))
		if more, _ := filepath.Glob(filepath.Join(root, "lib", "ld-linux-*.so*")); len(more) > 0 {
			libs = append(libs, more...)
		}
		if name == "autoglm-sidecar" {
			if len(libs) == 0 {
				t.Fatalf("%s: dynamically linked, but the image has no loader", name)
			}
			var dirs []string
			for _, d := range defaultLibDirs {
				if fi, err := os.Stat(filepath.Join(root, d)); err == nil && fi.IsDir() {
					dirs = append(dirs, filepath.Join(root, d))
				}
			}
			args = append([]string{libs[0], "--inhibit-cache", "--library-path", strings.Join(dirs, ":")}, args...)
		} else if len(libs) > 0 {
			t.Errorf("%s: a static binary's image carries a loader", name)
		}
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), name+" ") {
			t.Errorf("%s version from the image: %v\n%s", name, err, out)
		}
	}
}
