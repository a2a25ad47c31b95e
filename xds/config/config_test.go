package config_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/envoygen"
	"github.com/open-autoglm/autoglm/xds/snapshot"
)

const head = "apiVersion: autoglm.io/v1alpha1\nlisteners: {grpc: [g]}\n"

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"no version", "models: []\n", []string{"apiVersion: must be autoglm.io/v1alpha1", "listeners: at least one", "models: at least one model"}},
		{"unknown fields", head + "models:\n  - name: m\n    versoins: []\n    versions: [{name: v1, weight: 1, endpoints: [\"1.2.3.4:80\"], wieght: 3}]\n",
			[]string{"models[0].versoins (line 5): unknown field", "models[0].versions[0].wieght (line 6): unknown field"}},
		{"duplicates", head + "models:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}, {name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n",
			[]string{"models[1].name: duplicate model \"m\" (also models[0])", "models[0].versions[1].name: duplicate version \"a\""}},
		{"weights", head + "models:\n  - {name: m, versions: [{name: a, weight: 101, endpoints: [\"1.2.3.4:80\"]}, {name: b, weight: -1, endpoints: [\"1.2.3.4:80\"]}]}\n  - {name: n, versions: [{name: a, weight: 0, endpoints: [\"1.2.3.4:80\"]}]}\n",
			[]string{"models[0].versions[0].weight: must be 0..100, got 101", "models[0].versions[1].weight: must be 0..100, got -1", "models[1].versions: the weights sum to 0"}},
		{"endpoints", head + "models:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"host.example:80\", \"1.2.3.4\", \"1.2.3.4:0\"]}, {name: b, weight: 1}, {name: c, weight: 1, dns: \"x:80\", endpoints: [\"1.2.3.4:80\"]}, {name: d, weight: 1, dns: \":80\"}]}\n",
			[]string{"versions[0].endpoints[0]: must be an IP address and port (use dns for names)", "versions[0].endpoints[1]: must be host:port", "versions[0].endpoints[2]: port must be 1..65535", "versions[1].endpoints: endpoints, dns or service is required", "versions[2]: endpoints, dns and service exclude each other", "versions[3].dns: host is required"}},
		{"policies", head + "defaults:\n  retries: {attempts: 11, on: [5xx, teapot], budget_percent: 120}\n  load_balancing: {policy: random}\nmodels:\n  - name: m\n    load_balancing: {policy: ring_hash}\n    health_check: {path: readyz, interval: 0s, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 1}\n    versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]\n",
			[]string{"defaults.retries.attempts: must be 0..10", "defaults.retries.on[1]: unknown condition \"teapot\"", "defaults.retries.budget_percent", "defaults.load_balancing.policy: must be", "models[0].load_balancing.hash_header: is required for ring_hash", "models[0].health_check.path: must start with /", "models[0].health_check: interval and timeout must be positive"}},
		{"filter and tls", "apiVersion: autoglm.io/v1alpha1\nlisteners: {grpc: [g]}\nfilter: {wasm: {url: \"ftp://x/y.wasm\", sha256: abc}}\nupstream_tls: {sds_socket: agent.sock, svid: \"spiffe://other.org/x\", trust_domain: Example.org, sidecar_ids: [\"spiffe://other.org/s\"]}\nmodels:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n",
			[]string{"filter: needs listeners.http", "filter.wasm.url: must be an http(s) URL", "filter.wasm.sha256: must be 64", "upstream_tls.sds_socket: must be an absolute path", "upstream_tls.trust_domain", "upstream_tls.svid: must be a SPIFFE ID", "upstream_tls.sidecar_ids[0]"}},
		{"wasm source", "apiVersion: autoglm.io/v1alpha1\nlisteners: {http: {name: h, address: 0.0.0.0, port: 80}}\nfilter: {wasm: {file: relative.wasm}, config: {a: 1}}\nmodels:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n",
			[]string{"filter.wasm.file: must be an absolute path"}},
		{"cache cluster", "apiVersion: autoglm.io/v1alpha1\nlisteners: {http: {name: h, address: 0.0.0.0, port: 80}}\nfilter: {wasm: {file: /f.wasm}, config: {cache: {remote: {cluster: other}}}, cache_cluster: {name: Cache, endpoints: [\"cache.local:80\"], dns: \"x:1\"}}\nmodels:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n",
			[]string{"filter.cache_cluster.name: must be a lower-case name", "filter.cache_cluster: exactly one of endpoints and dns", "filter.cache_cluster.endpoints[0]: must be an IP address", "filter.config.cache.remote.cluster: must be \"Cache\""}},
		{"duplicate keys", head + "models:\n  - name: m\n    versions:\n      - name: a\n        weight: 90\n        weight: 10\n        endpoints: [\"1.2.3.4:80\"]\n",
			[]string{"models[0].versions[0].weight (line 8): duplicate key (first at line 7)"}},
		{"alias bomb", head + "x0: &x0 [a, a, a, a, a, a, a, a, a, a]\nx1: &x1 [*x0, *x0, *x0, *x0, *x0, *x0, *x0, *x0, *x0, *x0]\nx2: &x2 [*x1, *x1, *x1, *x1, *x1, *x1, *x1, *x1, *x1, *x1]\nx3: &x3 [*x2, *x2, *x2, *x2, *x2, *x2, *x2, *x2, *x2, *x2]\nx4: &x4 [*x3, *x3, *x3, *x3, *x3, *x3, *x3, *x3, *x3, *x3]\nx5: [*x4, *x4, *x4, *x4, *x4, *x4, *x4, *x4, *x4, *x4]\n",
			[]string{"aliases expand it by more than 100000 nodes"}},
		{"cluster name collisions", head + "models:\n  - {name: a-b, versions: [{name: c, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n  - {name: a, versions: [{name: b-c, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n  - {name: team/x, versions: [{name: v1, weight: 1, endpoints: [\"1.2.3.4:80\"], grpc_port: 9000}, {name: v1-grpc, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n  - {name: team_x, versions: [{name: v1, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n  - {name: \"team x\", versions: [{name: v2, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n  - {name: spire, versions: [{name: agent, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n",
			[]string{`models[1].versions[0]: its generated cluster name "a-b-c" is also models[0].versions[0]'s`,
				`models[2].versions[1]: its generated cluster name "team_x-v1-grpc" is also models[2].versions[0].grpc_port's`,
				`models[3].versions[0]: its generated cluster name "team_x-v1" is also models[2].versions[0]'s`,
				`models[4].name: must be 1-128 characters`,
				`models[5].versions[0]: its generated cluster name "spire-agent" is also a cluster autoglm-xds adds`}},
		{"filter mode and envoy", "apiVersion: autoglm.io/v1alpha1\nlisteners: {http: {name: h, address: 0.0.0.0, port: 80}}\nfilter: {wasm: {file: /f.wasm}, config: {mode: istio}, envoy_version: \"1.34.2\"}\nmodels:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n",
			[]string{"filter.config.mode: must be standalone (or unset) with autoglm-xds", "filter.envoy_version: body-based model routing needs allow_on_headers_stop_iteration, in Envoy 1.35 and later"}},
		{"envoy version syntax", "apiVersion: autoglm.io/v1alpha1\nlisteners: {http: {name: h, address: 0.0.0.0, port: 80}}\nfilter: {wasm: {file: /f.wasm}, envoy_version: latest}\nmodels:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n",
			[]string{"filter.envoy_version: must be a release such as 1.36"}},
		{"wrong types", head + "models:\n  - {name: m, timeout: soon, versions: [{name: a, weight: lots, endpoints: \"1.2.3.4:80\"}]}\n",
			[]string{"models[0].timeout (line 4)", "models[0].versions[0].weight (line 4)", "models[0].versions[0].endpoints (line 4)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tc.yaml))
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestEnvoyVersion: 1.35 and later (and no version: a current Envoy) take
// a filter config.
func TestEnvoyVersion(t *testing.T) {
	for _, v := range []string{"", "1.35", "v1.35.0", "1.36.2", "2.0"} {
		y := "apiVersion: autoglm.io/v1alpha1\nlisteners: {http: {name: h, address: 0.0.0.0, port: 80}}\nfilter: {wasm: {file: /f.wasm}, config: {mode: standalone}, envoy_version: \"" + v + "\"}\nmodels:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n"
		if _, err := config.Parse([]byte(y)); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
}

// FuzzParse: no input panics, and whatever is accepted compiles into
// resources that validate and make a consistent snapshot.
func FuzzParse(f *testing.F) {
	f.Add([]byte(head + "models:\n  - {name: m, versions: [{name: a, weight: 1, endpoints: [\"1.2.3.4:80\"], grpc_port: 9}]}\n"))
	f.Add([]byte("apiVersion: autoglm.io/v1alpha1\nlisteners: {http: {name: h, address: 0.0.0.0, port: 80}}\nmodels:\n  - {name: \"a/b:c\", load_balancing: {policy: ring_hash, hash_header: k}, versions: [{name: v, weight: 100, dns: \"x.y:80\"}]}\n"))
	f.Add([]byte(head + "defaults: {retries: {attempts: 2, on: [\"429\", reset]}, outlier_detection: {consecutive_5xx: 1, interval: 1s, base_ejection_time: 1s, max_ejection_percent: 10}}\nmodels: [{name: m, versions: [{name: a, weight: 5, endpoints: [\"::1:80\"]}]}]\n"))
	f.Add([]byte("apiVersion: autoglm.io/v1alpha1\nlisteners: {http: {name: h, address: 0.0.0.0, port: 80}}\nfilter: {wasm: {url: \"https://h:8443/f.wasm\", sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}, config: {x: [1, {y: z}]}}\nupstream_tls: {sds_socket: /s, svid: \"spiffe://t/e\", trust_domain: t}\nmodels: [{name: m, versions: [{name: a, weight: 5, endpoints: [\"10.0.0.1:80\"]}]}]\n"))
	f.Add([]byte("apiVersion: autoglm.io/v1alpha1\nlisteners: {http: {name: h, address: 0.0.0.0, port: 80}}\nfilter: {wasm: {file: /f.wasm}, cache_cluster: {name: c, endpoints: [\"10.0.0.2:8080\"]}}\nmodels: [{name: m, versions: [{name: a, weight: 5, endpoints: [\"10.0.0.1:80\"]}]}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data)
		if err != nil {
			return
		}
		res, err := envoygen.Generate(compile.Compile(c, nil))
		if err != nil {
			t.Fatalf("accepted config does not generate: %v", err)
		}
		if _, err := snapshot.Build(res); err != nil {
			t.Fatalf("accepted config gives invalid resources: %v\n%s", err, data)
		}
	})
}

func TestResolve(t *testing.T) {
	c, err := config.Parse([]byte(head + "models:\n  - {name: m, versions: [{name: a, weight: 1, dns: \"good.example:80\"}, {name: b, weight: 1, dns: \"bad.example:80\"}, {name: c, weight: 1, endpoints: [\"1.2.3.4:80\"]}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	err = c.Resolve(context.Background(), func(_ context.Context, host string) ([]string, error) {
		asked = append(asked, host)
		if host == "bad.example" {
			return nil, errors.New("no such host")
		}
		return []string{"10.0.0.1"}, nil
	})
	if err == nil || !strings.Contains(err.Error(), "models[0].versions[1].dns: bad.example does not resolve: no such host") || strings.Contains(err.Error(), "good") || len(asked) != 2 {
		t.Fatalf("%v (asked %v)", err, asked)
	}
}
