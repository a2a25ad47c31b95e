package image

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestImageRoundTrip: the image of a module is one Wasm layer whose digest
// is the module's sha256, reproducible, and survives an OCI layout and a
// push to and pull from a registry (go-containerregistry's, in process).
func TestImageRoundTrip(t *testing.T) {
	wasm := append([]byte("\x00asm\x01\x00\x00\x00"), make([]byte, 1000)...)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	img, err := Build(wasm, at)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Build(wasm, at)
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Fatalf("not reproducible: %s vs %s", d1, d2)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(wasm)
	if m.Config.MediaType != ConfigMediaType || len(m.Layers) != 1 || m.Layers[0].MediaType != LayerMediaType ||
		m.Layers[0].Digest.Hex != hex.EncodeToString(sum[:]) {
		t.Fatalf("manifest %+v", m)
	}
	dir := filepath.Join(t.TempDir(), "oci")
	if err := WriteLayout(dir, img); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	back, err := p.Image(d1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Layer(back); err != nil || string(got) != string(wasm) {
		t.Fatalf("layout: %v", err)
	}

	reg := httptest.NewServer(registry.New())
	defer reg.Close()
	ref, err := name.ParseReference(strings.TrimPrefix(reg.URL, "http://") + "/autoglm/filter:0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := pulled.Digest(); d != d1 {
		t.Fatalf("pulled digest %s, pushed %s", d, d1)
	}
	if got, err := Layer(pulled); err != nil || string(got) != string(wasm) {
		t.Fatalf("pulled layer: %v", err)
	}
	if _, err := Build([]byte("not wasm"), at); err == nil {
		t.Fatal("a non-wasm file was packaged")
	}
}
