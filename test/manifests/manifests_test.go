// Package manifests validates the Kubernetes manifests (kustomize base and
// overlays) and the Istio configuration of the repository: strict decoding
// against the real API types, and the configuration files they carry
// checked by the components' own parsers.
package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	extensionsv1alpha1 "istio.io/api/extensions/v1alpha1"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	securityv1 "istio.io/api/security/v1"
	telemetryv1 "istio.io/api/telemetry/v1"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	filterconfig "github.com/open-autoglm/autoglm/filter/config"
	sidecarconfig "github.com/open-autoglm/autoglm/sidecar/config"
	xdsconfig "github.com/open-autoglm/autoglm/xds/config"
)

func root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// docs splits a multi-document YAML file into JSON objects.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for i, d := range bytes.Split(raw, []byte("\n---")) {
		if len(bytes.TrimSpace(stripComments(d))) == 0 {
			continue
		}
		var m map[string]any
		if err := yaml.UnmarshalStrict(d, &m); err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		out = append(out, m)
	}
	return out
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// istioSpec is the istio.io/api message of each Istio kind used here.
var istioSpec = map[string]func() proto.Message{
	"networking.istio.io/v1/VirtualService":    func() proto.Message { return &networkingv1.VirtualService{} },
	"networking.istio.io/v1/DestinationRule":   func() proto.Message { return &networkingv1.DestinationRule{} },
	"extensions.istio.io/v1alpha1/WasmPlugin":  func() proto.Message { return &extensionsv1alpha1.WasmPlugin{} },
	"security.istio.io/v1/PeerAuthentication":  func() proto.Message { return &securityv1.PeerAuthentication{} },
	"security.istio.io/v1/AuthorizationPolicy": func() proto.Message { return &securityv1.AuthorizationPolicy{} },
	"telemetry.istio.io/v1/Telemetry":          func() proto.Message { return &telemetryv1.Telemetry{} },
}

// strictProto decodes v (a spec as decoded from YAML) into m with protojson,
// which, unlike istio.io/api's own JSON decoding, rejects unknown fields.
func strictProto(v any, m proto.Message) error {
	b, err := jsonMarshal(v)
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal(b, m)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// TestIstioSpecs: every Istio resource decodes strictly against its
// istio.io/api type; the WasmPlugin's pluginConfig passes the filter's own
// parser; the canary split and pins name the DestinationRule's subsets.
func TestIstioSpecs(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(root(), "istio", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no istio/*.yaml")
	}
	kinds := map[string]int{}
	subsets := map[string]bool{}
	var routed []string
	for _, f := range files {
		for _, d := range docs(t, f) {
			api, _ := d["apiVersion"].(string)
			kind, _ := d["kind"].(string)
			name := fmt.Sprintf("%s %s/%s", filepath.Base(f), kind, nameOf(d))
			kinds[kind]++
			switch {
			case kind == "IstioOperator":
				checkOperator(t, name, d)
				continue
			case api == "v1" && kind == "Namespace":
				continue
			}
			mk, ok := istioSpec[api+"/"+kind]
			if !ok {
				t.Errorf("%s: %s/%s is not an Istio kind this test knows", name, api, kind)
				continue
			}
			msg := mk()
			if err := strictProto(d["spec"], msg); err != nil {
				t.Errorf("%s: spec: %v", name, err)
				continue
			}
			switch m := msg.(type) {
			case *extensionsv1alpha1.WasmPlugin:
				pc, _ := jsonMarshal(d["spec"].(map[string]any)["pluginConfig"])
				if fc, err := filterconfig.Parse(pc); err != nil {
					t.Errorf("%s: pluginConfig: %v", name, err)
				} else if fc.Mode != filterconfig.ModeIstio {
					// WasmPlugin cannot set allow_on_headers_stop_iteration:
					// a filter holding the headers would stall every request.
					t.Errorf("%s: pluginConfig mode %q: a WasmPlugin needs mode istio", name, fc.Mode)
				}
				if !strings.HasPrefix(m.Url, "oci://") || len(m.Sha256) != 64 {
					t.Errorf("%s: url %q sha256 %q: want oci:// and a sha256 digest", name, m.Url, m.Sha256)
				}
			case *networkingv1.DestinationRule:
				for _, s := range m.Subsets {
					subsets[s.Name] = true
				}
			case *networkingv1.VirtualService:
				for _, r := range m.Http {
					total := int32(0)
					for _, d := range r.Route {
						routed = append(routed, d.Destination.Subset)
						total += d.Weight
					}
					if len(r.Route) > 1 && total != 100 {
						t.Errorf("%s: route %s weights sum to %d", name, r.Name, total)
					}
				}
			case *securityv1.PeerAuthentication:
				if m.Mtls.GetMode() != securityv1.PeerAuthentication_MutualTLS_STRICT {
					t.Errorf("%s: mTLS is %v, want STRICT", name, m.Mtls.GetMode())
				}
			}
		}
	}
	for _, s := range routed {
		if !subsets[s] {
			t.Errorf("the VirtualService routes to subset %q, which no DestinationRule defines", s)
		}
	}
	for _, k := range []string{"IstioOperator", "VirtualService", "DestinationRule", "WasmPlugin", "PeerAuthentication", "AuthorizationPolicy", "Telemetry"} {
		if kinds[k] == 0 {
			t.Errorf("istio/ has no %s", k)
		}
	}
}

func nameOf(d map[string]any) string {
	md, _ := d["metadata"].(map[string]any)
	n, _ := md["name"].(string)
	return n
}

// checkOperator: IstioOperator's type is not in istio.io/api; its
// meshConfig is (strict), and its top-level spec fields are checked by name.
// istioctl validate checks the rest (issue 7's istioctl step).
func checkOperator(t *testing.T, name string, d map[string]any) {
	spec, _ := d["spec"].(map[string]any)
	known := map[string]bool{"profile": true, "meshConfig": true, "values": true, "components": true, "hub": true, "tag": true, "revision": true, "namespace": true}
	for k := range spec {
		if !known[k] {
			t.Errorf("%s: spec.%s: unknown IstioOperator field", name, k)
		}
	}
	if err := strictProto(spec["meshConfig"], &meshv1alpha1.MeshConfig{}); err != nil {
		t.Errorf("%s: spec.meshConfig: %v", name, err)
	}
}

// build renders a kustomization directory.
func build(t *testing.T, dir string) []map[string]any {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []map[string]any
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// crdShapes are the custom resources the manifests use, with the fields
// allowed in their specs (their CRDs are not Go types here; the API server
// dry-run checks them fully).
var crdShapes = map[string][]string{
	"monitoring.coreos.com/v1/ServiceMonitor":  {"selector", "endpoints", "namespaceSelector", "jobLabel", "podTargetLabels"},
	"spire.spiffe.io/v1alpha1/ClusterSPIFFEID": {"spiffeIDTemplate", "podSelector", "namespaceSelector", "dnsNameTemplates", "ttl", "federatesWith", "workloadSelectorTemplates", "className", "fallback", "hint", "admin", "downstream", "autoPopulateDNSNames", "jwtTtl"},
}

// overlays are the installs manifests/ offers, with what each needs.
var overlays = []struct {
	dir string
	// core: only built-in Kubernetes kinds (applies on a plain cluster).
	core bool
	// istio: applied under Istio with istio/*.yaml (the filter's remote
	// cache tier on, callers from the proxy's XFCC).
	istio bool
}{
	{"base", true, false}, {"overlays/minimal", true, false}, {"overlays/dev", true, false},
	{"overlays/istio", false, true}, {"overlays/gpu", false, true},
}

// TestKustomize: base and every overlay render; every built-in object
// decodes strictly into its Kubernetes type; references hold (ConfigMaps,
// Services' selectors, HPA targets, PDBs); the sidecar and autoglm-xds
// configuration files inside pass their own validation; the core
// overlays hold no object of a CRD; the names agree across configurations
// (crossReference).
func TestKustomize(t *testing.T) {
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, kjson.SerializerOptions{Yaml: false, Strict: true})
	for _, ov := range overlays {
		dir := ov.dir
		t.Run(dir, func(t *testing.T) {
			objs := build(t, filepath.Join(root(), "manifests", dir))
			byKind := map[string][]map[string]any{}
			for _, o := range objs {
				api, kind := o["apiVersion"].(string), o["kind"].(string)
				byKind[kind] = append(byKind[kind], o)
				name := kind + "/" + nameOf(o)
				if fields, ok := crdShapes[api+"/"+kind]; ok {
					if ov.core {
						t.Errorf("%s: %s needs a CRD (%s), and this overlay is meant for a plain cluster", dir, name, api)
					}
					spec, _ := o["spec"].(map[string]any)
					for k := range spec {
						if !contains(fields, k) {
							t.Errorf("%s: spec.%s: unknown field", name, k)
						}
					}
					continue
				}
				b, _ := jsonMarshal(o)
				if _, _, err := strict.Decode(b, nil, nil); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
			checkReferences(t, byKind)
			sc, xc := checkConfigs(t, byKind)
			crossReference(t, ov.istio, byKind, sc, xc)
			want := []string{"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "ClusterRole", "ServiceAccount"}
			if ov.istio {
				want = append(want, "HorizontalPodAutoscaler", "ServiceMonitor", "ClusterSPIFFEID")
			}
			for _, k := range want {
				if len(byKind[k]) == 0 {
					t.Errorf("no %s", k)
				}
			}
			if dir == "overlays/gpu" {
				if !strings.Contains(fmt.Sprint(byKind["Deployment"]), "nvidia.com/gpu") {
					t.Error("the gpu overlay asks for no GPU")
				}
				if len(byKind["PersistentVolumeClaim"]) == 0 || len(byKind["Job"]) == 0 {
					t.Error("the gpu overlay has no model volume or download Job")
				}
			}
		})
	}
}

// crossReference checks that the configurations of one overlay agree: the
// model the sidecars serve is the one autoglm-xds routes (and each of its
// versions names a Service of the overlay, on a port that Service has);
// with the remote cache tier on (every Istio overlay: istio/wasmplugin.yaml
// turns it on), the sidecar's Redis is a Service of the overlay, and the
// sidecar verifies callers (the cache endpoint needs it).
func crossReference(t *testing.T, istio bool, byKind map[string][]map[string]any, sc *sidecarconfig.Config, xc *xdsconfig.Config) {
	t.Helper()
	if sc == nil || xc == nil {
		return
	}
	services := map[string]map[string]any{}
	for _, s := range byKind["Service"] {
		services[nameOf(s)] = s
	}
	hasPort := func(svc map[string]any, port int) bool {
		ports, _ := get(svc, "spec", "ports").([]any)
		for _, p := range ports {
			if fmt.Sprint(get(p, "port")) == strconv.Itoa(port) {
				return true
			}
		}
		return false
	}
	routed := false
	for _, m := range xc.Models {
		if m.Name == sc.Engine.Model {
			routed = true
		} else {
			t.Errorf("autoglm-xds routes model %q, which no sidecar of this overlay serves (they serve %q)", m.Name, sc.Engine.Model)
		}
		for _, v := range m.Versions {
			if v.Service == nil {
				continue
			}
			svc, ok := services[v.Service.Name]
			if !ok {
				t.Errorf("model %s version %s: Service %s is not in this overlay", m.Name, v.Name, v.Service.Name)
			} else if !hasPort(svc, v.Service.Port) {
				t.Errorf("model %s version %s: Service %s has no port %d", m.Name, v.Name, v.Service.Name, v.Service.Port)
			}
		}
	}
	if !routed {
		t.Errorf("the sidecars serve %q, which autoglm-xds does not route", sc.Engine.Model)
	}
	if istio {
		u, err := url.Parse(sc.Cache.RedisURL)
		if err != nil || sc.Cache.RedisURL == "" {
			t.Errorf("cache.redis_url %q: the remote cache tier (istio/wasmplugin.yaml) has no Redis", sc.Cache.RedisURL)
		} else if port, _ := strconv.Atoi(u.Port()); services[svcName(u.Hostname())] == nil || !hasPort(services[svcName(u.Hostname())], port) {
			t.Errorf("cache.redis_url %s: no Service %s with port %d in this overlay", sc.Cache.RedisURL, svcName(u.Hostname()), port)
		}
		if sc.Identity.Mode != "xfcc" {
			t.Errorf("identity.mode %q: behind Istio's proxy the caller comes from x-forwarded-client-cert (xfcc)", sc.Identity.Mode)
		}
	}
	// The filter's plugin configuration under Istio and the metrics port.
	if sc.Server.MetricsAddr == "" {
		t.Error("server.metrics_addr is empty: no port for scrapes outside the mesh")
	}
}

// svcName is the Service of a cluster DNS name (name, name.ns, name.ns.svc…).
func svcName(host string) string {
	name, _, _ := strings.Cut(host, ".")
	return name
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func get(o any, path ...string) any {
	for _, p := range path {
		m, ok := o.(map[string]any)
		if !ok {
			return nil
		}
		o = m[p]
	}
	return o
}

func checkReferences(t *testing.T, byKind map[string][]map[string]any) {
	names := func(kind string) map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, o := range byKind[kind] {
			out[nameOf(o)] = o
		}
		return out
	}
	configMaps, deployments := names("ConfigMap"), names("Deployment")
	podLabels := map[string]map[string]any{}
	for n, d := range deployments {
		podLabels[n], _ = get(d, "spec", "template", "metadata", "labels").(map[string]any)
		sel, _ := get(d, "spec", "selector", "matchLabels").(map[string]any)
		if !subset(sel, podLabels[n]) {
			t.Errorf("Deployment/%s: selector %v does not match its pods %v", n, sel, podLabels[n])
		}
		vols, _ := get(d, "spec", "template", "spec", "volumes").([]any)
		for _, v := range vols {
			if cm, ok := get(v, "configMap", "name").(string); ok && configMaps[cm] == nil {
				t.Errorf("Deployment/%s: volume uses ConfigMap %s, which is not rendered", n, cm)
			}
		}
	}
	matchesSome := func(sel map[string]any) bool {
		for _, l := range podLabels {
			if subset(sel, l) {
				return true
			}
		}
		return false
	}
	for _, s := range byKind["Service"] {
		if sel, _ := get(s, "spec", "selector").(map[string]any); !matchesSome(sel) {
			t.Errorf("Service/%s: selector %v matches no pods", nameOf(s), sel)
		}
	}
	for _, p := range byKind["PodDisruptionBudget"] {
		if sel, _ := get(p, "spec", "selector", "matchLabels").(map[string]any); !matchesSome(sel) {
			t.Errorf("PodDisruptionBudget/%s: selector matches no pods", nameOf(p))
		}
	}
	for _, h := range byKind["HorizontalPodAutoscaler"] {
		if target, _ := get(h, "spec", "scaleTargetRef", "name").(string); deployments[target] == nil {
			t.Errorf("HorizontalPodAutoscaler/%s: targets Deployment %q, which is not rendered", nameOf(h), target)
		}
	}
}

func subset(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkConfigs runs the sidecar's and autoglm-xds's validation on the
// configuration files the ConfigMaps carry.
func checkConfigs(t *testing.T, byKind map[string][]map[string]any) (*sidecarconfig.Config, *xdsconfig.Config) {
	found := 0
	var sc *sidecarconfig.Config
	var xc *xdsconfig.Config
	for _, cm := range byKind["ConfigMap"] {
		data, _ := cm["data"].(map[string]any)
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			body := data[k].(string)
			switch k {
			case "sidecar.yaml":
				found++
				c := sidecarconfig.Default()
				if err := sidecarconfig.Parse([]byte(body), &c); err != nil {
					t.Errorf("ConfigMap/%s %s: %v", nameOf(cm), k, err)
				} else if err := c.Validate(); err != nil {
					t.Errorf("ConfigMap/%s %s: %v", nameOf(cm), k, err)
				} else {
					sc = &c
				}
			case "xds.yaml":
				found++
				x, err := xdsconfig.Parse([]byte(body))
				if err != nil {
					t.Errorf("ConfigMap/%s %s: %v", nameOf(cm), k, err)
				}
				xc = x
			}
		}
	}
	if found != 2 {
		t.Errorf("%d configuration files found in the ConfigMaps, want the sidecar's and autoglm-xds's", found)
	}
	return sc, xc
}

// TestPrometheusAdapterRules: the adapter rules read metrics the sidecar
// exports and give the names the HPAs ask for.
func TestPrometheusAdapterRules(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(root(), "manifests", "prometheus-adapter", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Rules []struct {
			SeriesQuery string `json:"seriesQuery"`
			Resources   any    `json:"resources"`
			Name        struct {
				Matches string `json:"matches"`
				As      string `json:"as"`
			} `json:"name"`
			MetricsQuery string `json:"metricsQuery"`
		} `json:"rules"`
	}
	if err := yaml.UnmarshalStrict(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	telemetry, _ := os.ReadFile(filepath.Join(root(), "sidecar", "telemetry", "metrics.go"))
	exposed := map[string]bool{}
	for _, r := range cfg.Rules {
		series := strings.SplitN(r.SeriesQuery, "{", 2)[0]
		if !bytes.Contains(telemetry, []byte(`"`+series+`"`)) {
			t.Errorf("rule reads %s, which the sidecar does not export", series)
		}
		exposed[r.Name.As] = true
	}
	for _, h := range build(t, filepath.Join(root(), "manifests", "base")) {
		if h["kind"] != "HorizontalPodAutoscaler" {
			continue
		}
		ms, _ := get(h, "spec", "metrics").([]any)
		for _, m := range ms {
			if n, _ := get(m, "pods", "metric", "name").(string); n != "" && !exposed[n] {
				t.Errorf("HorizontalPodAutoscaler/%s uses pod metric %s, which no adapter rule exposes", nameOf(h), n)
			}
		}
	}
}
