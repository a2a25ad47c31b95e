package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Model is an entry of the upstream's /v1/models.
type Model struct {
	ID string `json:"id"`
	// MaxModelLen is the context length, where the upstream says it (vLLM
	// and autoglm-sidecar do); 0 otherwise.
	MaxModelLen int `json:"max_model_len"`
}

// Models lists the upstream's models.
func (c *Client) Models(ctx context.Context) ([]Model, error) {
	resp, err := c.get(ctx, "/v1/models")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v struct {
		Data []Model `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: /v1/models: %v", ErrUnavailable, err)
	}
	return v.Data, nil
}

// Gauge is where the upstream's /metrics says its best concurrency: the
// value of the first sample of Metric, or, when Label is set, that label's
// value parsed as a number (for info-style gauges).
type Gauge struct {
	Metric string
	Label  string
}

func (g Gauge) String() string {
	if g.Label != "" {
		return g.Metric + "{" + g.Label + "}"
	}
	return g.Metric
}

// ReadGauge reads g from the upstream's Prometheus metrics.
func (c *Client) ReadGauge(ctx context.Context, g Gauge) (float64, error) {
	resp, err := c.get(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, fmt.Errorf("%w: /metrics: %v", ErrUnavailable, err)
	}
	f, ok := fams[g.Metric]
	if !ok || len(f.GetMetric()) == 0 {
		return 0, fmt.Errorf("/metrics has no %s", g.Metric)
	}
	m := f.GetMetric()[0]
	if g.Label == "" {
		var v float64
		switch {
		case m.GetGauge() != nil:
			v = m.GetGauge().GetValue()
		case m.GetUntyped() != nil:
			v = m.GetUntyped().GetValue()
		case m.GetCounter() != nil:
			v = m.GetCounter().GetValue()
		default:
			return 0, fmt.Errorf("%s is not a gauge", g.Metric)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("%s is %v", g.Metric, v)
		}
		return v, nil
	}
	for _, l := range m.GetLabel() {
		if l.GetName() == g.Label {
			v, err := strconv.ParseFloat(l.GetValue(), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: label value %q is not a number", g, l.GetValue())
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("%s has no label %s", g.Metric, g.Label)
}

func (c *Client) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}
