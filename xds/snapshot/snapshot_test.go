package snapshot_test

import (
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/envoygen"
	"github.com/open-autoglm/autoglm/xds/snapshot"
)

func generate(t *testing.T, weight string) *envoygen.Resources {
	c, err := config.Parse([]byte("apiVersion: autoglm.io/v1alpha1\nlisteners: {grpc: [g], http: {name: h, address: 0.0.0.0, port: 80}}\nmodels:\n  - {name: m, versions: [{name: a, weight: " + weight + ", endpoints: [\"1.2.3.4:80\"], grpc_port: 90}, {name: b, weight: 1, endpoints: [\"1.2.3.5:80\"]}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := envoygen.Generate(compile.Compile(c, nil))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestVersion: the version is a hash of the content: equal content, equal
// version; a weight change, a new one.
func TestVersion(t *testing.T) {
	a, _ := snapshot.Build(generate(t, "9"))
	b, _ := snapshot.Build(generate(t, "9"))
	c, _ := snapshot.Build(generate(t, "8"))
	if a.GetVersion(resource.ListenerType) != b.GetVersion(resource.ListenerType) || a.GetVersion(resource.ListenerType) == c.GetVersion(resource.ListenerType) {
		t.Fatal("version must follow the content")
	}
}

// TestInconsistent: a missing route configuration or endpoints is caught
// before anything is published.
func TestInconsistent(t *testing.T) {
	r := generate(t, "9")
	r.Routes = r.Routes[:1]
	r.Endpoints = r.Endpoints[1:]
	_, err := snapshot.Build(r)
	if err == nil || !strings.Contains(err.Error(), "route configuration \"g-routes\" is missing") || !strings.Contains(err.Error(), "endpoints are missing") {
		t.Fatalf("%v", err)
	}
}
