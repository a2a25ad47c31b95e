package manifests

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	yamlv3 "gopkg.in/yaml.v3"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// chartValues are the value sets the chart is checked with: each renders
// (Helm's own engine, through its Go SDK), decodes strictly, holds
// consistent configurations, and passes the server-side dry run.
var chartValues = []struct {
	name  string
	istio bool // meant for Istio: the checks of overlays/istio apply
	vals  map[string]any
}{
	{"defaults", false, nil},
	{"istio", true, map[string]any{
		"identity":      map[string]any{"mode": "xfcc", "spire": true},
		"istio":         map[string]any{"enabled": true},
		"cache":         map[string]any{"enabled": true},
		"autoscaling":   map[string]any{"enabled": true},
		"observability": map[string]any{"serviceMonitors": true},
	}},
	{"gpu", true, map[string]any{
		"model":    map[string]any{"name": "qwen2.5-7b-instruct"},
		"engine":   map[string]any{"kind": "vllm"},
		"identity": map[string]any{"mode": "xfcc", "spire": true},
		"istio":    map[string]any{"enabled": true},
		"cache":    map[string]any{"enabled": true},
	}},
	{"external-redis", false, map[string]any{
		"identity":        map[string]any{"mode": "xfcc"},
		"cache":           map[string]any{"enabled": true, "redis": map[string]any{"deploy": false, "url": "redis://redis.cache.svc:6379/2"}},
		"networkPolicies": false,
		"model":           map[string]any{"versions": []any{map[string]any{"name": "stable", "replicas": 2, "weight": 100}}},
	}},
}

// renderChart renders manifests/helm/autoglm with vals as `helm install
// autoglm -n autoglm` would.
func renderChart(vals map[string]any) ([]map[string]any, error) {
	ch, err := loader.Load(filepath.Join(root(), "manifests", "helm", "autoglm"))
	if err != nil {
		return nil, err
	}
	rv, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "autoglm", Namespace: "autoglm", IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []map[string]any
	for _, n := range names {
		if !strings.HasSuffix(n, ".yaml") {
			continue
		}
		dec := yamlv3.NewDecoder(bytes.NewReader([]byte(files[n])))
		for {
			var doc any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, errors.New(n + ": " + err.Error())
			}
			if doc == nil {
				continue
			}
			b, err := yaml.Marshal(doc)
			if err != nil {
				return nil, err
			}
			var m map[string]any
			if err := yaml.Unmarshal(b, &m); err != nil {
				return nil, err
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// TestHelmChart renders every value set and checks it as the overlays are
// checked; bad values fail the render with the value's path.
func TestHelmChart(t *testing.T) {
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, kjson.SerializerOptions{Yaml: false, Strict: true})
	for _, vs := range chartValues {
		t.Run(vs.name, func(t *testing.T) {
			objs, err := renderChart(vs.vals)
			if err != nil {
				t.Fatal(err)
			}
			byKind := map[string][]map[string]any{}
			for _, o := range objs {
				api, kind := o["apiVersion"].(string), o["kind"].(string)
				byKind[kind] = append(byKind[kind], o)
				if _, ok := crdShapes[api+"/"+kind]; ok {
					continue
				}
				b, _ := jsonMarshal(o)
				if _, _, err := strict.Decode(b, nil, nil); err != nil {
					t.Errorf("%s/%s: %v", kind, nameOf(o), err)
				}
			}
			checkReferences(t, byKind)
			sc, xc := checkConfigs(t, byKind)
			crossReference(t, vs.istio, byKind, sc, xc)
			want := []string{"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "ClusterRole", "ServiceAccount"}
			if vs.istio {
				want = append(want, "ClusterSPIFFEID")
			}
			for _, k := range want {
				if len(byKind[k]) == 0 {
					t.Errorf("no %s", k)
				}
			}
			switch vs.name {
			case "gpu":
				if len(byKind["Job"]) == 0 || len(byKind["PersistentVolumeClaim"]) == 0 || !strings.Contains(string(mustJSON(byKind["Deployment"])), "nvidia.com/gpu") {
					t.Error("vllm: no GPU, model volume or download Job")
				}
			case "external-redis":
				if sc != nil && sc.Cache.RedisURL != "redis://redis.cache.svc:6379/2" {
					t.Errorf("cache.redis_url %q", sc.Cache.RedisURL)
				}
				if len(byKind["NetworkPolicy"]) != 0 || strings.Contains(string(mustJSON(byKind["Deployment"])), "autoglm-redis") {
					t.Error("network policies or a Redis Deployment rendered although switched off")
				}
			}
		})
	}
	for _, bad := range []struct {
		vals map[string]any
		want string
	}{
		{map[string]any{"engine": map[string]any{"kind": "tgi"}}, `engine.kind: "tgi" is not native or vllm`},
		{map[string]any{"cache": map[string]any{"enabled": true}}, "cache.enabled: the cache endpoint needs identity.mode"},
		{map[string]any{"identity": map[string]any{"mode": "xfcc"}, "cache": map[string]any{"enabled": true, "redis": map[string]any{"deploy": false}}}, "cache.redis.url is required"},
	} {
		if _, err := renderChart(bad.vals); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("values %v: %v, want an error saying %q", bad.vals, err, bad.want)
		}
	}
}

func mustJSON(v any) []byte {
	b, _ := jsonMarshal(v)
	return b
}
