package rollout

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynfake "k8s.io/client-go/dynamic/fake"
)

func virtualService() *unstructured.Unstructured {
	dest := func(subset string, w int64) map[string]any {
		return map[string]any{"destination": map[string]any{"host": "qwen", "subset": subset}, "weight": w}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
		"metadata": map[string]any{"name": "qwen", "namespace": "models"},
		"spec": map[string]any{"hosts": []any{"qwen"}, "http": []any{
			map[string]any{"name": "pinned", "match": []any{map[string]any{"headers": map[string]any{"x-autoglm-version": map[string]any{"exact": "v2"}}}},
				"route": []any{dest("v2", 100)}},
			map[string]any{"name": "split", "route": []any{dest("v1", 90), dest("v2", 10)}},
		}},
	}}
}

// TestIstioWeights: the split route's weights follow the rollout; the
// version pin is left alone.
func TestIstioWeights(t *testing.T) {
	client := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{VirtualServices: "VirtualServiceList"}, virtualService())
	apply := IstioWeights(client, "models", "qwen", "v1", "v2")
	if err := apply(30); err != nil {
		t.Fatal(err)
	}
	obj, err := client.Resource(VirtualServices).Namespace("models").Get(context.Background(), "qwen", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	routes, _, _ := unstructured.NestedSlice(obj.Object, "spec", "http")
	split := routes[1].(map[string]any)["route"].([]any)
	pinned := routes[0].(map[string]any)["route"].([]any)
	if split[0].(map[string]any)["weight"] != int64(70) || split[1].(map[string]any)["weight"] != int64(30) || pinned[0].(map[string]any)["weight"] != int64(100) {
		t.Fatalf("routes after 30 %%: %v", routes)
	}
	if err := IstioWeights(client, "models", "qwen", "v1", "v3")(10); err == nil || !strings.Contains(err.Error(), "no http route sends to both subsets v1 and v3") {
		t.Fatalf("%v", err)
	}
	if err := IstioWeights(client, "models", "nope", "v1", "v2")(10); err == nil || !strings.Contains(err.Error(), "virtualservice models/nope") {
		t.Fatalf("%v", err)
	}
}
