package kube

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/server"
)

var next = 0

func slice(name, service string, ready ...bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "models", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, r := range ready {
		next++
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.1.0.%d", next)}, Conditions: discoveryv1.EndpointConditions{Ready: &r}})
	}
	return s
}

// TestDiscovery: a version's Service resolves to the ready addresses of its
// EndpointSlices; a change republishes the configuration.
func TestDiscovery(t *testing.T) {
	client := fake.NewClientset(slice("qwen-v1-a", "qwen-v1", true, false), slice("qwen-v1-b", "qwen-v1", true), slice("other", "other", true))
	w := New(client)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go w.Run(ctx)
	if !w.WaitForSync(ctx) {
		t.Fatal("no sync")
	}
	cfg, err := config.Parse([]byte(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [g]}
models:
  - name: qwen
    versions:
      - {name: v1, weight: 100, service: {namespace: models, name: qwen-v1, port: 8080}, grpc_port: 9090}
      - {name: v2, weight: 0, service: {namespace: models, name: qwen-v2, port: 8080}, grpc_port: 9090}
`))
	if err != nil {
		t.Fatal(err)
	}
	found := w.Discovered(cfg)
	v1 := found[config.ServiceRef{Namespace: "models", Name: "qwen-v1", Port: 8080}]
	v2 := found[config.ServiceRef{Namespace: "models", Name: "qwen-v2", Port: 8080}]
	// 10.1.0.2 is not ready.
	if len(v1) != 2 || v1[0] != "10.1.0.1:8080" || v1[1] != "10.1.0.3:8080" || len(v2) != 0 {
		t.Fatalf("discovered %v", found)
	}

	s := server.New(slog.New(slog.DiscardHandler))
	s.SetDiscovery(w.Discovered)
	if err := s.Publish(cfg); err != nil { // v2 has no pods yet: an empty cluster, not an error
		t.Fatal(err)
	}
	first := s.Status().Version
	// A v2 pod becomes ready.
	for len(w.Changed()) > 0 {
		<-w.Changed()
	}
	if _, err := client.DiscoveryV1().EndpointSlices("models").Create(ctx, slice("qwen-v2-a", "qwen-v2", true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no change notice")
	}
	for deadline := time.Now().Add(5 * time.Second); len(w.Discovered(cfg)[config.ServiceRef{Namespace: "models", Name: "qwen-v2", Port: 8080}]) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the new slice was not seen")
		}
	}
	if err := s.Republish(); err != nil {
		t.Fatal(err)
	}
	if s.Status().Version == first {
		t.Fatal("the discovered endpoint did not change the snapshot")
	}
}
