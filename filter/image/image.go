// Package image packages the compiled filter as the OCI image Istio's
// WasmPlugin pulls (url: oci://…): one layer holding the module with the
// media type application/vnd.module.wasm.content.layer.v1+wasm and a
// config of application/vnd.module.wasm.config.v1+json — the "compat"
// Wasm OCI format Istio's agent accepts. Built with go-containerregistry:
// no Docker.
package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of the Wasm OCI image.
const (
	LayerMediaType  types.MediaType = "application/vnd.module.wasm.content.layer.v1+wasm"
	ConfigMediaType types.MediaType = "application/vnd.module.wasm.config.v1+json"
)

// Build makes the image of a module. The result depends only on its
// inputs (created is the image's creation time), so a build is
// reproducible and its digest can be pinned in a WasmPlugin.
func Build(wasm []byte, created time.Time) (v1.Image, error) {
	if len(wasm) < 8 || !bytes.Equal(wasm[:4], []byte("\x00asm")) {
		return nil, fmt.Errorf("not a WebAssembly module (no \\0asm header)")
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:       static.NewLayer(wasm, LayerMediaType),
		Annotations: map[string]string{"org.opencontainers.image.title": "plugin.wasm"},
	})
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, ConfigMediaType)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: created.UTC()}
	cfg.Architecture, cfg.OS = "wasm", "wasip1"
	return mutate.ConfigFile(img, cfg)
}

// WriteLayout writes img as an OCI image layout directory (index.json,
// oci-layout, blobs/), the format registries' tools copy from.
func WriteLayout(dir string, img v1.Image) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img)
}

// Layer returns the module stored in img, checking that it is one layer
// of the Wasm media type.
func Layer(img v1.Image) ([]byte, error) {
	ls, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(ls) != 1 {
		return nil, fmt.Errorf("%d layers, want 1", len(ls))
	}
	mt, err := ls[0].MediaType()
	if err != nil || mt != LayerMediaType {
		return nil, fmt.Errorf("layer media type %q, want %q", mt, LayerMediaType)
	}
	rc, err := ls[0].Uncompressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// Describe is the image's digest and the manifest's media types, as JSON
// for the command's output.
func Describe(img v1.Image) (string, error) {
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	m, err := img.Manifest()
	if err != nil {
		return "", err
	}
	b, _ := json.Marshal(map[string]any{"digest": d.String(), "sha256": d.Hex, "mediaType": m.MediaType, "config": m.Config.MediaType,
		"layers": len(m.Layers)})
	return string(b), nil
}
