// Package image builds the OCI images of the autoglm binaries without a
// container runtime (go-containerregistry): one layer holding the binary,
// CA certificates, a non-root user and, for a dynamically linked binary
// (the sidecar links glibc for NVML), the loader and the shared libraries
// it names, copied from the build machine. Entries are sorted and stamped
// with the creation time, so the same binary gives the same digest.
package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// User is the image's user and group: distroless' "nonroot".
const (
	UID  = 65532
	Home = "/home/nonroot"
)

// Spec is one image.
type Spec struct {
	// Binary is the file to ship; Name its name in the image, under
	// /usr/local/bin, and the entrypoint.
	Binary, Name string
	// Created stamps the image and every file in it.
	Created time.Time
	// CACerts is the CA bundle to ship as /etc/ssl/certs/ca-certificates.crt.
	CACerts string
	// LibDirs are searched, in order, for the shared libraries a
	// dynamically linked binary needs (default: Debian's x86-64 and
	// arm64 multiarch directories, /lib64, /usr/lib, /lib).
	LibDirs []string
	// Labels become the config's labels (org.opencontainers.image.*).
	Labels map[string]string
	// Ports are exposed ("8080/tcp").
	Ports []string
}

var defaultLibDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

type file struct {
	name string
	mode int64
	uid  int
	data []byte
	dir  bool
	link string
}

// Build makes the image.
func Build(s Spec) (v1.Image, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(s.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w", err)
	}
	files := []file{
		{name: "etc", dir: true, mode: 0o755}, {name: "etc/ssl", dir: true, mode: 0o755}, {name: "etc/ssl/certs", dir: true, mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca},
		{name: "etc/passwd", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n", UID, UID, Home)},
		{name: "etc/group", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", UID)},
		{name: "home", dir: true, mode: 0o755}, {name: strings.TrimPrefix(Home, "/"), dir: true, mode: 0o700, uid: UID},
		{name: "tmp", dir: true, mode: 0o1777},
		{name: "usr", dir: true, mode: 0o755}, {name: "usr/local", dir: true, mode: 0o755}, {name: "usr/local/bin", dir: true, mode: 0o755},
		{name: "usr/local/bin/" + s.Name, mode: 0o755, data: bin},
	}
	libs, err := sharedLibraries(s.Binary, s.LibDirs)
	if err != nil {
		return nil, err
	}
	files = append(files, libs...)
	layer, err := layerOf(files, s.Created)
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: s.Created.UTC()}, CreatedBy: "autoglm release/image: " + s.Name,
	}})
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: s.Created.UTC()}
	arch, err := archOf(s.Binary)
	if err != nil {
		return nil, err
	}
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Config.Entrypoint = []string{"/usr/local/bin/" + s.Name}
	cfg.Config.User = fmt.Sprintf("%d:%d", UID, UID)
	cfg.Config.WorkingDir = Home
	cfg.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + Home, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cfg.Config.Labels = s.Labels
	if len(s.Ports) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range s.Ports {
			cfg.Config.ExposedPorts[p] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cfg)
}

func archOf(bin string) (string, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return "", fmt.Errorf("%s: not a Linux executable: %w", bin, err)
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	}
	return "", fmt.Errorf("%s: unsupported machine %s", bin, f.Machine)
}

// sharedLibraries returns the loader and the libraries (transitively) a
// dynamically linked binary needs, at the paths it will look for them;
// none for a static binary.
func sharedLibraries(bin string, dirs []string) ([]file, error) {
	if len(dirs) == 0 {
		dirs = defaultLibDirs
	}
	f, err := elf.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", bin, err)
	}
	defer f.Close()
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return nil, err
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		return nil, nil // static
	}
	var out []file
	seen := map[string]bool{}
	add := func(p string) error { // p: the path in the image; the same on this machine
		if seen[p] {
			return nil
		}
		seen[p] = true
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(real)
		if err != nil {
			return err
		}
		for d := path.Dir(strings.TrimPrefix(p, "/")); d != "."; d = path.Dir(d) {
			if !seen["/"+d] {
				seen["/"+d] = true
				out = append(out, file{name: d, dir: true, mode: 0o755})
			}
		}
		out = append(out, file{name: strings.TrimPrefix(p, "/"), mode: 0o755, data: data})
		return nil
	}
	if err := add(interp); err != nil {
		return nil, fmt.Errorf("loader %s: %w", interp, err)
	}
	queue := []string{bin}
	for len(queue) > 0 {
		ef, err := elf.Open(queue[0])
		queue = queue[1:]
		if err != nil {
			return nil, err
		}
		needed, err := ef.ImportedLibraries()
		ef.Close()
		if err != nil {
			return nil, err
		}
		for _, lib := range needed {
			p := ""
			for _, d := range dirs {
				if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
					p = filepath.Join(d, lib)
					break
				}
			}
			if p == "" {
				return nil, fmt.Errorf("%s needs %s, not found in %v", bin, lib, dirs)
			}
			if !seen[p] {
				if err := add(p); err != nil {
					return nil, err
				}
				queue = append(queue, p)
			}
		}
	}
	return out, nil
}

// layerOf is a deterministic tar layer of files.
func layerOf(files []file, created time.Time) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := created.UTC().Truncate(time.Second)
	for i, f := range files {
		if i > 0 && files[i-1].name == f.name {
			continue
		}
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: mt, Format: tar.FormatPAX}
		switch {
		case f.dir:
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// WriteLayout writes the images as one OCI image layout directory, each
// annotated with its reference name (org.opencontainers.image.ref.name).
func WriteLayout(dir string, imgs map[string]v1.Image) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(imgs))
	for n := range imgs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := p.AppendImage(imgs[n], layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": n})); err != nil {
			return err
		}
	}
	return nil
}

// ReadLayout returns the images of an OCI layout by reference name.
func ReadLayout(dir string) (map[string]v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := map[string]v1.Image{}
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		out[d.Annotations["org.opencontainers.image.ref.name"]] = img
	}
	return out, nil
}

// Extract writes the files of img's layers under dir (regular files,
// directories and symlinks; nothing outside dir).
func Extract(img v1.Image, dir string) error {
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			return err
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				rc.Close()
				return err
			}
			p := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+h.Name)))
			switch h.Typeflag {
			case tar.TypeDir:
				err = os.MkdirAll(p, 0o755)
			case tar.TypeReg:
				var b []byte
				if b, err = io.ReadAll(tr); err == nil {
					err = os.WriteFile(p, b, os.FileMode(h.Mode)&0o777|0o200)
				}
			}
			if err != nil {
				rc.Close()
				return err
			}
		}
		rc.Close()
	}
	return nil
}
