package rollout

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// promAPI answers /api/v1/query in the Prometheus HTTP API's documented
// format (prometheus.io/docs/prometheus/latest/querying/api: a "vector"
// result of {metric, value: [time, "string"]}) for a version with two
// pods, p1 (up) and p2 (down), and records the queries.
func promAPI(t *testing.T, queries *[]string) string {
	type sample struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	v := func(val string, labels ...string) sample {
		m := map[string]string{}
		for i := 0; i < len(labels); i += 2 {
			m[labels[i]] = labels[i+1]
		}
		return sample{m, [2]any{1.7e9, val}}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		q := r.Form.Get("query")
		*queries = append(*queries, q)
		var res []sample
		switch {
		case !strings.Contains(q, `version="v2"`):
		case strings.HasPrefix(q, "sum by (pod, code) (autoglm_requests_total"):
			res = []sample{v("90", "pod", "p1", "code", "200"), v("6", "pod", "p1", "code", "503"), v("4", "pod", "p1", "code", "429"), v("10", "pod", "p2", "code", "200")}
		case strings.Contains(q, "autoglm_time_to_first_token_seconds_bucket"):
			res = []sample{v("50", "pod", "p1", "le", "0.1"), v("90", "pod", "p1", "le", "0.2"), v("90", "pod", "p1", "le", "+Inf"), v("10", "pod", "p2", "le", "+Inf")}
		case strings.Contains(q, "autoglm_time_per_output_token_seconds_bucket"):
			res = []sample{v("90", "pod", "p1", "le", "0.01"), v("90", "pod", "p1", "le", "+Inf"), v("10", "pod", "p2", "le", "+Inf")}
		case strings.HasPrefix(q, "count by (pod) (up"):
			res = []sample{v("1", "pod", "p1")}
		default:
			http.Error(w, `{"status":"error","errorType":"bad_data","error":"unexpected query"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": res}})
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestPrometheusSource: a version's counters read through the Prometheus
// HTTP API, per pod, with codes, buckets and pods up.
func TestPrometheusSource(t *testing.T) {
	var queries []string
	p, err := NewPrometheus(PrometheusSource{URL: promAPI(t, &queries)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Sample(context.Background(), "v2")
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := s.Targets["p1"], s.Targets["p2"]
	if p1.Requests != 100 || p1.Errors != 6 || p1.Shed != 4 || p2.Requests != 10 || s.Ready != 1 {
		t.Fatalf("sample %+v", s)
	}
	if p1.TTFT[0.1] != 50 || p1.TTFT[math.Inf(1)] != 90 || p1.TPOT[0.01] != 90 {
		t.Fatalf("buckets %+v", p1)
	}
	w := s.Since(Sample{})
	if w.Requests != 110 || math.IsNaN(w.TTFTP99) || !strings.Contains(s.Source, `prometheus `) || !strings.Contains(s.Source, "1 pods up") {
		t.Fatalf("window %+v, source %q", w, s.Source)
	}
	if len(queries) != 4 {
		t.Fatalf("queries %q", queries)
	}
	if _, err := p.Sample(context.Background(), "v3"); err != nil { // no series: an empty sample
		t.Fatal(err)
	}
	for _, bad := range []PrometheusSource{{URL: "prometheus:9090"}, {URL: "http://p:9090", Selector: `{version="x"}`}} {
		if _, err := NewPrometheus(bad, nil); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
