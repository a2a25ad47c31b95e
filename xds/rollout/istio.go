package rollout

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
)

// VirtualServices is Istio's VirtualService resource.
var VirtualServices = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}

// IstioWeights applies a canary weight in Istio mode: in every HTTP route of
// the VirtualService namespace/name that sends to both subsets, the canary
// subset gets the weight and the stable one the rest. Conflicting writes
// are retried on the latest version.
func IstioWeights(client dynamic.Interface, namespace, name, stable, canary string) func(int) error {
	vs := client.Resource(VirtualServices).Namespace(namespace)
	return func(w int) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			obj, err := vs.Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("virtualservice %s/%s: %w", namespace, name, err)
			}
			routes, _, err := unstructured.NestedSlice(obj.Object, "spec", "http")
			if err != nil {
				return fmt.Errorf("virtualservice %s/%s: spec.http: %w", namespace, name, err)
			}
			changed := 0
			for i, r := range routes {
				route, ok := r.(map[string]any)
				if !ok {
					continue
				}
				dests, _, _ := unstructured.NestedSlice(route, "route")
				has := map[string]bool{}
				for _, d := range dests {
					if dm, ok := d.(map[string]any); ok {
						sub, _, _ := unstructured.NestedString(dm, "destination", "subset")
						has[sub] = true
					}
				}
				if !has[stable] || !has[canary] {
					continue
				}
				for j, d := range dests {
					dm := d.(map[string]any)
					switch sub, _, _ := unstructured.NestedString(dm, "destination", "subset"); sub {
					case canary:
						dm["weight"] = int64(w)
					case stable:
						dm["weight"] = int64(100 - w)
					default:
						dm["weight"] = int64(0)
					}
					dests[j] = dm
				}
				route["route"] = dests
				routes[i] = route
				changed++
			}
			if changed == 0 {
				return fmt.Errorf("virtualservice %s/%s: no http route sends to both subsets %s and %s", namespace, name, stable, canary)
			}
			if err := unstructured.SetNestedSlice(obj.Object, routes, "spec", "http"); err != nil {
				return err
			}
			_, err = vs.Update(context.Background(), obj, metav1.UpdateOptions{})
			return err
		})
	}
}
