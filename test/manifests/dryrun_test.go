package manifests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/open-autoglm/autoglm/internal/toolcache"
)

// kubeDir is where make test's kube target caches etcd, kube-apiserver
// and the CRDs.
func kubeDir(t *testing.T) string {
	return toolcache.Require(t, "kube", "kube-v1.36.3", "bin/etcd", "bin/kube-apiserver", "crds/done-4")
}

func port(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startProc(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			out := logs.String()
			if len(out) > 4000 {
				out = out[len(out)-4000:]
			}
			t.Logf("%s:\n%s", filepath.Base(name), out)
		}
	})
}

// apiServer starts etcd and kube-apiserver on loopback and returns a
// client configuration (a static token of system:masters).
func apiServer(t *testing.T, dir string) *rest.Config {
	tmp := t.TempDir()
	etcdPort, peerPort, apiPort := port(t), port(t), port(t)
	startProc(t, filepath.Join(dir, "bin", "etcd"), "--name", "test", "--data-dir", filepath.Join(tmp, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort), "--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPort),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort), "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", peerPort),
		"--initial-cluster", fmt.Sprintf("test=http://127.0.0.1:%d", peerPort), "--log-level", "error")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(tmp, "sa.key")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	tokens := filepath.Join(tmp, "tokens.csv")
	os.WriteFile(tokens, []byte("autoglm-test-token,admin,admin,system:masters\n"), 0o600)
	startProc(t, filepath.Join(dir, "bin", "kube-apiserver"),
		"--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdPort), "--bind-address", "127.0.0.1",
		"--secure-port", fmt.Sprint(apiPort), "--cert-dir", filepath.Join(tmp, "certs"), "--token-auth-file", tokens,
		"--authorization-mode", "RBAC", "--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", keyFile, "--service-account-signing-key-file", keyFile,
		"--service-cluster-ip-range", "10.96.0.0/16", "--enable-priority-and-fairness=false")
	cfg := &rest.Config{Host: fmt.Sprintf("https://127.0.0.1:%d", apiPort), BearerToken: "autoglm-test-token",
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		body, err := dc.RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && string(body) == "ok" {
			return cfg
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready: %v %s", err, body)
		}
	}
}

// objects decodes a multi-document YAML file.
func objects(t *testing.T, raw []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, d := range bytes.Split(raw, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) == 0 {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(d, &m); err != nil {
			t.Fatal(err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out
}

// TestServerDryRun: with the Istio, Prometheus Operator and SPIRE CRDs
// installed in a real kube-apiserver, every rendered overlay object and
// every Istio resource is accepted by a server-side dry run with strict
// field validation (schemas, defaults, CEL rules, admission).
func TestServerDryRun(t *testing.T) {
	dir := kubeDir(t)
	cfg := apiServer(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dc, _ := discovery.NewDiscoveryClientForConfig(cfg)
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crds, _ := filepath.Glob(filepath.Join(dir, "crds", "*.yaml"))
	var names []string
	for _, f := range crds {
		raw, _ := os.ReadFile(f)
		for _, o := range objects(t, raw) {
			if o.GetKind() != "CustomResourceDefinition" {
				continue
			}
			if _, err := dyn.Resource(crdGVR).Create(ctx, o, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("CRD %s: %v", o.GetName(), err)
			}
			names = append(names, o.GetName())
		}
	}
	for _, n := range names { // wait until each is served
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			c, err := dyn.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
			established := false
			if err == nil {
				conds, _, _ := unstructured.NestedSlice(c.Object, "status", "conditions")
				for _, cd := range conds {
					m, _ := cd.(map[string]any)
					established = established || (m["type"] == "Established" && m["status"] == "True")
				}
			}
			if established {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("CRD %s not established", n)
			}
		}
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))

	var all []*unstructured.Unstructured
	for _, o := range []string{"overlays/minimal", "overlays/dev", "overlays/istio", "overlays/gpu", "observability"} {
		for _, m := range build(t, filepath.Join(root(), "manifests", o)) {
			all = append(all, &unstructured.Unstructured{Object: m})
		}
	}
	// The Helm chart with each of its value sets.
	for _, vs := range chartValues {
		objs, err := renderChart(vs.vals)
		if err != nil {
			t.Fatalf("chart values %s: %v", vs.name, err)
		}
		for _, m := range objs {
			all = append(all, &unstructured.Unstructured{Object: m})
		}
	}
	files, _ := filepath.Glob(filepath.Join(root(), "istio", "*.yaml"))
	tools, _ := filepath.Glob(filepath.Join(root(), "istio", "rollout-tools", "*.yaml"))
	drills, _ := filepath.Glob(filepath.Join(root(), "istio", "drills", "*.yaml"))
	gie, _ := filepath.Glob(filepath.Join(root(), "istio", "inference-extension", "*.yaml"))
	tools = append(append(tools, drills...), gie...)
	for _, f := range append(files, tools...) {
		raw, _ := os.ReadFile(f)
		all = append(all, objects(t, raw)...)
	}
	// Namespaces for real first: namespaced dry runs need them.
	nsGVR := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	for _, ns := range []string{"autoglm", "istio-system"} {
		o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}
		if _, err := dyn.Resource(nsGVR).Create(ctx, o, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	checked := map[string]bool{}
	for _, o := range all {
		gvk := o.GroupVersionKind()
		name := fmt.Sprintf("%s %s/%s", gvk.GroupVersion(), gvk.Kind, o.GetName())
		if gvk.Kind == "IstioOperator" {
			continue // an istioctl install file, not an API object (istioctl validate checks it)
		}
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s: the API server does not serve it: %v", name, err)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == "namespace" {
			ns := o.GetNamespace()
			if ns == "" {
				ns = "default"
			}
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		_, err = ri.Create(ctx, o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
		if err != nil && !(gvk.Kind == "Namespace" && apierrors.IsAlreadyExists(err)) {
			t.Errorf("%s: %v", name, err)
		}
		checked[gvk.Kind] = true
	}
	for _, k := range []string{"Deployment", "HorizontalPodAutoscaler", "ServiceMonitor", "ClusterSPIFFEID", "VirtualService", "DestinationRule", "WasmPlugin", "AuthorizationPolicy", "PeerAuthentication", "Telemetry", "PrometheusRule", "ConfigMap", "InferencePool", "Job", "PersistentVolumeClaim"} {
		if !checked[k] {
			t.Errorf("no %s was dry-run", k)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("dry-run accepted %d objects of %d kinds: %s", len(all), len(checked), strings.Join(keys(checked), ", "))
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
