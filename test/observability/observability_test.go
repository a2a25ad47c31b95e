// Package observability tests the shipped alerts and dashboard
// (manifests/observability) with Prometheus' own packages: the rule file
// parser, the PromQL parser, and rule evaluation over series loaded as
// promtool's unit tests load them.
package observability

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"sigs.k8s.io/yaml"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/internal/cli"
	"github.com/open-autoglm/autoglm/sidecar/cache"
	sidecarcfg "github.com/open-autoglm/autoglm/sidecar/config"
	"github.com/open-autoglm/autoglm/sidecar/identity"
	"github.com/open-autoglm/autoglm/sidecar/server"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
	xdsmetrics "github.com/open-autoglm/autoglm/xds/metrics"
)

func root() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(f), "..", "..")
}

// registered is every metric name the code registers: a sidecar's
// registry (with the GPU collector, the cache endpoint's and the identity
// policy's counters) and autoglm-xds's collector, read from their
// descriptors, so a series that has no sample yet counts too.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	s := server.New(sidecarcfg.Default(), testengine.New(testengine.Config{Model: "m"}), 0, slog.New(slog.DiscardHandler))
	reg := s.Registry()
	reg.MustRegister(telemetry.GPUCollector{Read: nil})
	cache.Handler(nil, cache.Config{}, reg)
	identity.NewDenied(reg)
	xds := prometheus.NewRegistry()
	xds.MustRegister(xdsmetrics.Collector{}, cli.Collector())
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, r := range []*prometheus.Registry{reg, xds} {
		ch := make(chan *prometheus.Desc)
		go func() { r.Describe(ch); close(ch) }()
		for d := range ch {
			if m := fq.FindStringSubmatch(d.String()); m != nil {
				names[m[1]] = true
			}
		}
	}
	if !names["autoglm_requests_total"] || !names["autoglm_gpu_xid_errors_total"] || !names["autoglm_xds_nacks_total"] {
		t.Fatalf("the catalogue misses metrics: %v", names)
	}
	return names
}

// checkNames parses expr as PromQL and reports the metrics it reads that
// the code does not register (a histogram's _bucket, _sum and _count
// series count as its name).
func checkNames(t *testing.T, where, expr string, known map[string]bool) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: PromQL: %v\n%s", where, err, expr)
		return nil
	}
	var used []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
		}
		used = append(used, name)
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if strings.HasSuffix(name, suf) && known[strings.TrimSuffix(name, suf)] {
				base = strings.TrimSuffix(name, suf)
			}
		}
		if !known[base] {
			t.Errorf("%s: reads %q, which no code registers", where, name)
		}
		return nil
	})
	return used
}

// ruleFile is the PrometheusRule's spec as a Prometheus rule file.
func ruleFile(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root(), "manifests", "observability", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &pr); err != nil || pr.Kind != "PrometheusRule" {
		t.Fatalf("prometheusrule.yaml: kind %q, %v", pr.Kind, err)
	}
	out, err := yaml.JSONToYAML(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func loadRules(t *testing.T) []rulefmt.Rule {
	t.Helper()
	groups, errs := rulefmt.Parse(ruleFile(t), false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("Prometheus' rule parser: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}
	var out []rulefmt.Rule
	for _, g := range groups.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// TestRulesParseAndReadRegisteredMetrics: the rules pass Prometheus' rule
// parser; each alert reads only metrics the code registers, has a
// severity, a summary, and a runbook whose section exists.
func TestRulesParseAndReadRegisteredMetrics(t *testing.T) {
	known := registered(t)
	runbooks, err := os.ReadFile(filepath.Join(root(), "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, l := range strings.Split(string(runbooks), "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			anchors[strings.ToLower(strings.ReplaceAll(h, " ", "-"))] = true
		}
	}
	rs := loadRules(t)
	if len(rs) < 13 {
		t.Fatalf("%d rules", len(rs))
	}
	for _, r := range rs {
		checkNames(t, r.Alert, r.Expr, known)
		if s := r.Labels["severity"]; s != "page" && s != "ticket" {
			t.Errorf("%s: severity %q, want page or ticket", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: no summary or description", r.Alert)
		}
		u := r.Annotations["runbook_url"]
		_, anchor, _ := strings.Cut(u, "#")
		if !strings.HasPrefix(u, "https://github.com/open-autoglm/autoglm/blob/main/docs/runbooks.md#") || !anchors[anchor] {
			t.Errorf("%s: runbook_url %q has no section in docs/runbooks.md", r.Alert, u)
		}
	}
}

// alertCase is a promtool-style unit test: series loaded (promtool's
// input_series notation, one sample a minute), the rule evaluated every
// minute up to at, and the alerts expected firing then (the labels each
// must carry); none for a healthy input.
type alertCase struct {
	alert  string
	series string
	at     time.Duration
	fires  bool
	labels map[string]string
}

var alertCases = []alertCase{
	{"AutoglmTTFTBudgetBurnFast", `
		gen_ai_server_time_to_first_token_seconds_bucket{namespace="ns", gen_ai_request_model="m", le="2.5"} 0+80x130
		gen_ai_server_time_to_first_token_seconds_count{namespace="ns", gen_ai_request_model="m"} 0+100x130`,
		125 * time.Minute, true, map[string]string{"gen_ai_request_model": "m", "severity": "page"}},
	{"AutoglmTTFTBudgetBurnFast", `
		gen_ai_server_time_to_first_token_seconds_bucket{namespace="ns", gen_ai_request_model="m", le="2.5"} 0+99x130
		gen_ai_server_time_to_first_token_seconds_count{namespace="ns", gen_ai_request_model="m"} 0+100x130`,
		125 * time.Minute, false, nil},
	{"AutoglmTTFTBudgetBurnSlow", `
		gen_ai_server_time_to_first_token_seconds_bucket{namespace="ns", gen_ai_request_model="m", le="2.5"} 0+90x420
		gen_ai_server_time_to_first_token_seconds_count{namespace="ns", gen_ai_request_model="m"} 0+100x420`,
		400 * time.Minute, true, map[string]string{"gen_ai_request_model": "m", "severity": "ticket"}},
	{"AutoglmTTFTBudgetBurnSlow", `
		gen_ai_server_time_to_first_token_seconds_bucket{namespace="ns", gen_ai_request_model="m", le="2.5"} 0+96x420
		gen_ai_server_time_to_first_token_seconds_count{namespace="ns", gen_ai_request_model="m"} 0+100x420`,
		400 * time.Minute, false, nil},
	{"AutoglmErrorBudgetBurnFast", `
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="500"} 0+10x130
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="200"} 0+90x130`,
		125 * time.Minute, true, map[string]string{"model": "m"}},
	{"AutoglmErrorBudgetBurnFast", `
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="500"} 0+1x130
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="429"} 0+50x130
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="200"} 0+199x130`,
		125 * time.Minute, false, nil},
	{"AutoglmErrorBudgetBurnSlow", `
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="503"} 0+5x420
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="200"} 0+95x420`,
		400 * time.Minute, true, map[string]string{"model": "m"}},
	{"AutoglmErrorBudgetBurnSlow", `
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="503"} 0+1x420
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="200"} 0+99x420`,
		400 * time.Minute, false, nil},
	{"AutoglmQueueSaturated", `
		autoglm_queue_depth{namespace="ns", pod="p", model="m", priority="0"} 3x30
		autoglm_running_sequences{namespace="ns", pod="p", model="m"} 8x30
		autoglm_max_running_sequences{namespace="ns", pod="p", model="m"} 8x30`,
		15 * time.Minute, true, map[string]string{"pod": "p"}},
	{"AutoglmQueueSaturated", `
		autoglm_queue_depth{namespace="ns", pod="p", model="m", priority="0"} 3x30
		autoglm_running_sequences{namespace="ns", pod="p", model="m"} 7x30
		autoglm_max_running_sequences{namespace="ns", pod="p", model="m"} 8x30`,
		15 * time.Minute, false, nil},
	{"AutoglmShedding", `
		autoglm_rejections_total{namespace="ns", model="m", reason="queue_full"} 0+10x30
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="200"} 0+100x30`,
		20 * time.Minute, true, map[string]string{"model": "m"}},
	{"AutoglmShedding", `
		autoglm_rejections_total{namespace="ns", model="m", reason="queue_full"} 0+1x30
		autoglm_rejections_total{namespace="ns", model="m", reason="invalid_request"} 0+50x30
		autoglm_requests_total{namespace="ns", model="m", api="chat", code="200"} 0+100x30`,
		20 * time.Minute, false, nil},
	{"AutoglmKVCacheExhausted", `autoglm_kv_utilization{namespace="ns", pod="p", model="m"} 0.97x30`,
		20 * time.Minute, true, map[string]string{"pod": "p"}},
	{"AutoglmKVCacheExhausted", `autoglm_kv_utilization{namespace="ns", pod="p", model="m"} 0.9x30`,
		20 * time.Minute, false, nil},
	{"AutoglmSidecarNotReady", `autoglm_ready{namespace="ns", pod="p", model="m"} 0x10`,
		6 * time.Minute, true, map[string]string{"pod": "p"}},
	{"AutoglmSidecarNotReady", `autoglm_ready{namespace="ns", pod="p", model="m"} 1 1 0 0 1 1 1 1 1 1`,
		9 * time.Minute, false, nil},
	{"AutoglmGPUXid", `autoglm_gpu_xid_errors_total{pod="p", gpu="0", xid="79"} 0 0 1 1 1`,
		3 * time.Minute, true, map[string]string{"xid": "79"}},
	{"AutoglmGPUXid", `autoglm_gpu_xid_errors_total{pod="p", gpu="0", xid="79"} 0x5`, 4 * time.Minute, false, nil},
	{"AutoglmGPUECC", `autoglm_gpu_ecc_uncorrected_errors_total{pod="p", gpu="1"} 0 0 2 2`,
		3 * time.Minute, true, map[string]string{"gpu": "1"}},
	{"AutoglmGPUECC", `autoglm_gpu_ecc_uncorrected_errors_total{pod="p", gpu="1"} 5x4`, 3 * time.Minute, false, nil},
	{"AutoglmGPUThrottled", `autoglm_gpu_clock_throttle{namespace="ns", pod="p", gpu="0", reason="hw_thermal_slowdown"} 1x20`,
		16 * time.Minute, true, map[string]string{"reason": "hw_thermal_slowdown"}},
	{"AutoglmGPUThrottled", `autoglm_gpu_clock_throttle{namespace="ns", pod="p", gpu="0", reason="gpu_idle"} 1x20`,
		16 * time.Minute, false, nil},
	{"AutoglmXDSConfigRejected", `autoglm_xds_config_rejected 1x5`, 2 * time.Minute, true, nil},
	{"AutoglmXDSConfigRejected", `autoglm_xds_config_rejected 0x5`, 4 * time.Minute, false, nil},
	{"AutoglmXDSNack", `autoglm_xds_nacks_total{node="envoy-1", type_url="type.googleapis.com/envoy.config.route.v3.RouteConfiguration"} 0 0 1 1`,
		3 * time.Minute, true, map[string]string{"node": "envoy-1"}},
	{"AutoglmXDSNack", `autoglm_xds_nacks_total{node="envoy-1", type_url="x"} 2x4`, 3 * time.Minute, false, nil},
	{"AutoglmCanaryRolledBack", `
		autoglm_rollout_state{model="m", state="rolled_back"} 0 0 1 1
		autoglm_rollout_state{model="m", state="progressing"} 1 1 0 0`,
		3 * time.Minute, true, map[string]string{"model": "m"}},
	{"AutoglmCanaryRolledBack", `
		autoglm_rollout_state{model="m", state="rolled_back"} 0x4
		autoglm_rollout_state{model="m", state="promoted"} 1x4`,
		3 * time.Minute, false, nil},
	{"AutoglmCacheTierFailingOpen", `
		autoglm_cache_requests_total{namespace="ns", pod="p", op="get", result="error"} 0+20x20
		autoglm_cache_requests_total{namespace="ns", pod="p", op="get", result="hit"} 0+80x20`,
		15 * time.Minute, true, map[string]string{"pod": "p"}},
	{"AutoglmCacheTierFailingOpen", `
		autoglm_cache_requests_total{namespace="ns", pod="p", op="get", result="error"} 0+1x20
		autoglm_cache_requests_total{namespace="ns", pod="p", op="get", result="miss"} 0+99x20`,
		15 * time.Minute, false, nil},
}

// TestAlertCases evaluates each alert over its cases, stepping a minute at
// a time as Prometheus' rule manager does, so that `for:` is honoured;
// every alert has a case where it fires and one where it stays quiet.
func TestAlertCases(t *testing.T) {
	byName := map[string]rulefmt.Rule{}
	for _, r := range loadRules(t) {
		byName[r.Alert] = r
	}
	fired, quiet := map[string]bool{}, map[string]bool{}
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery)
	for i, c := range alertCases {
		r, ok := byName[c.alert]
		if !ok {
			t.Fatalf("case %d: no alert %s", i, c.alert)
		}
		load := "load 1m"
		for _, l := range strings.Split(strings.TrimSpace(c.series), "\n") {
			load += "\n  " + strings.TrimSpace(l)
		}
		st := promqltest.LoadedStorage(t, load)
		expr, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
		if err != nil {
			t.Fatal(err)
		}
		rule := rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
			labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", false, slog.New(slog.DiscardHandler))
		query := rules.EngineQueryFunc(engine, st)
		start := time.Unix(0, 0).UTC()
		for ts := time.Duration(0); ts <= c.at; ts += time.Minute {
			if _, err := rule.Eval(context.Background(), 0, start.Add(ts), query, nil, 0); err != nil {
				t.Fatalf("case %d (%s): eval at %v: %v", i, c.alert, ts, err)
			}
		}
		var firing []*rules.Alert
		for _, a := range rule.ActiveAlerts() {
			if a.State == rules.StateFiring {
				firing = append(firing, a)
			}
		}
		switch {
		case c.fires && len(firing) == 0:
			t.Errorf("case %d: %s does not fire at %v", i, c.alert, c.at)
		case !c.fires && len(firing) > 0:
			t.Errorf("case %d: %s fires at %v on a healthy input: %v", i, c.alert, c.at, firing[0].Labels)
		}
		for _, a := range firing {
			for k, v := range c.labels {
				if got := a.Labels.Get(k); got != v {
					t.Errorf("case %d: %s fires with %s=%q, want %q (labels %v)", i, c.alert, k, got, v, a.Labels)
				}
			}
		}
		if c.fires {
			fired[c.alert] = true
		} else {
			quiet[c.alert] = true
		}
		st.Close()
	}
	for name := range byName {
		if !fired[name] || !quiet[name] {
			t.Errorf("%s: needs a case where it fires and one where it does not (fires %v, quiet %v)", name, fired[name], quiet[name])
		}
	}
}

// TestDashboard: the Grafana dashboard parses; every query (panels and
// template variables) is valid PromQL once Grafana's variables are
// substituted, reads only metrics the code registers, and the panels an
// operator needs are there.
func TestDashboard(t *testing.T) {
	known := registered(t)
	raw, err := os.ReadFile(filepath.Join(root(), "manifests", "observability", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name, Type string
				Query      any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil || d.UID == "" {
		t.Fatalf("dashboard.json: %v (uid %q)", err, d.UID)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatal("dashboard.json: data after the object")
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$namespace", ".*", "$model", ".*")
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_]+\)$`)
	var used []string
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(string); ok && v.Type == "query" {
			m := labelValues.FindStringSubmatch(q)
			if m == nil {
				t.Errorf("variable %s: query %q", v.Name, q)
				continue
			}
			used = append(used, checkNames(t, "variable "+v.Name, vars.Replace(m[1]), known)...)
		}
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			used = append(used, checkNames(t, "panel "+p.Title, vars.Replace(tg.Expr), known)...)
		}
	}
	for _, want := range []string{
		"autoglm_requests_total", "autoglm_time_to_first_token_seconds_bucket", "autoglm_time_per_output_token_seconds_bucket",
		"autoglm_queue_depth", "autoglm_batch_size_bucket", "autoglm_generation_tokens_total", "autoglm_rejections_total",
		"autoglm_cache_requests_total", "autoglm_kv_utilization", "autoglm_gpu_utilization_ratio", "autoglm_rollout_canary_weight",
	} {
		if !slices.Contains(used, want) {
			t.Errorf("no panel reads %s", want)
		}
	}
}
