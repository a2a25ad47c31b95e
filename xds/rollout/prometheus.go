package rollout

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// PrometheusSource reads the versions' counters from a Prometheus server's
// HTTP API instead of scraping their sidecars (plan: prometheus).
type PrometheusSource struct {
	// URL is the server's base URL, e.g. http://prometheus-operated.monitoring:9090.
	URL string `yaml:"url" json:"url"`
	// Selector picks a version's sidecar series; {{version}} is replaced by
	// the version's name. Default: version="{{version}}" (the label the
	// manifests' ServiceMonitor copies from the pods).
	Selector string `yaml:"selector" json:"selector,omitempty"`
}

func (p *PrometheusSource) validate() error {
	u, err := url.Parse(p.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("prometheus.url: want an http(s) URL, got %q", p.URL)
	}
	if s := p.Selector; strings.ContainsAny(strings.ReplaceAll(s, "{{version}}", ""), "{}") {
		return fmt.Errorf("prometheus.selector: label matchers without braces, e.g. version=\"{{version}}\"; got %q", s)
	}
	return nil
}

// Prometheus samples versions through a Prometheus HTTP API.
type Prometheus struct {
	api      v1.API
	src      PrometheusSource
	selector string
}

// NewPrometheus returns the sampler of src.
func NewPrometheus(src PrometheusSource, rt http.RoundTripper) (*Prometheus, error) {
	if err := src.validate(); err != nil {
		return nil, err
	}
	c, err := api.NewClient(api.Config{Address: src.URL, RoundTripper: rt})
	if err != nil {
		return nil, err
	}
	sel := src.Selector
	if sel == "" {
		sel = `version="{{version}}"`
	}
	return &Prometheus{api: v1.NewAPI(c), src: src, selector: sel}, nil
}

// Sample reads the version's counters per pod, as the sidecars export
// them (so restarts are handled as in a scrape), and how many of its
// pods Prometheus sees up.
func (p *Prometheus) Sample(ctx context.Context, version string) (Sample, error) {
	sel := strings.ReplaceAll(p.selector, "{{version}}", version)
	s := Sample{Targets: map[string]Counters{}, Source: fmt.Sprintf("prometheus %s {%s}", p.src.URL, sel)}
	pod := func(m model.Metric) Counters {
		c, ok := s.Targets[string(m["pod"])]
		if !ok {
			c = Counters{TTFT: map[float64]float64{}, TPOT: map[float64]float64{}}
		}
		return c
	}
	query := func(q string, each func(model.Metric, float64)) error {
		v, _, _, err := p.api.Query(ctx, q, time.Now())
		if err != nil {
			return fmt.Errorf("prometheus %s: %w", q, err)
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return fmt.Errorf("prometheus %s: a %s, want a vector", q, v.Type())
		}
		for _, e := range vec {
			each(e.Metric, float64(e.Value))
		}
		return nil
	}
	if err := query(fmt.Sprintf(`sum by (pod, code) (autoglm_requests_total{%s})`, sel), func(m model.Metric, v float64) {
		c := pod(m)
		c.Requests += v
		switch code, _ := strconv.Atoi(string(m["code"])); {
		case code == http.StatusTooManyRequests:
			c.Shed += v
		case code >= 500:
			c.Errors += v
		}
		s.Targets[string(m["pod"])] = c
	}); err != nil {
		return s, err
	}
	for _, h := range []struct {
		name string
		into func(*Counters) map[float64]float64
	}{
		{"autoglm_time_to_first_token_seconds_bucket", func(c *Counters) map[float64]float64 { return c.TTFT }},
		{"autoglm_time_per_output_token_seconds_bucket", func(c *Counters) map[float64]float64 { return c.TPOT }},
	} {
		if err := query(fmt.Sprintf(`sum by (pod, le) (%s{%s})`, h.name, sel), func(m model.Metric, v float64) {
			le, err := strconv.ParseFloat(string(m["le"]), 64)
			if err != nil {
				return
			}
			c := pod(m)
			h.into(&c)[le] += v
			s.Targets[string(m["pod"])] = c
		}); err != nil {
			return s, err
		}
	}
	if err := query(fmt.Sprintf(`count by (pod) (up{%s} == 1)`, sel), func(model.Metric, float64) { s.Ready++ }); err != nil {
		return s, err
	}
	for name, c := range s.Targets { // a histogram must end at +Inf
		for _, h := range []map[float64]float64{c.TTFT, c.TPOT} {
			if _, ok := h[math.Inf(1)]; len(h) > 0 && !ok {
				return s, fmt.Errorf("prometheus: pod %s: a histogram without its +Inf bucket", name)
			}
		}
	}
	s.Source += fmt.Sprintf(": %d pods up", s.Ready)
	return s, nil
}
