package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-autoglm/autoglm/internal/strictyaml"
	"github.com/open-autoglm/autoglm/xds/rollout"
	"github.com/open-autoglm/autoglm/xds/server"
)

// loadPlan reads a rollout plan (YAML, strict).
func loadPlan(path string) (rollout.Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return rollout.Plan{}, err
	}
	return loadPlanText(string(data))
}

func loadPlanText(text string) (rollout.Plan, error) {
	var p rollout.Plan
	err := strictyaml.Decode([]byte(text), &p)
	if err == nil {
		err = p.Validate()
	}
	return p, err
}

// newRollout builds the controller of plan over s: weights are published
// by s (or, with istio set, written to that VirtualService), SLO samples
// scraped from every ready endpoint of each version (rollout.Targets).
func newRollout(s *server.Server, plan rollout.Plan, istio func(int) error) (*rollout.Controller, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	targets := rollout.Targets{Config: s.Config, Discovered: s.Discovered, Resolver: net.DefaultResolver}
	sample := func(ctx context.Context, version string) (rollout.Sample, error) {
		return targets.Sample(ctx, hc, plan.Model, version)
	}
	apply := func(w int) error {
		return s.SetWeights(plan.Model, map[string]int{plan.Stable: 100 - w, plan.Canary: w})
	}
	if istio != nil {
		apply = istio
	}
	return rollout.New(plan, apply, sample)
}

// collector exports the control plane's and the rollout's state.
type collector struct {
	s  *server.Server
	ro *rollout.Controller
}

var (
	infoDesc     = prometheus.NewDesc("autoglm_xds_snapshot_info", "The served snapshot's version.", []string{"version"}, nil)
	rejectDesc   = prometheus.NewDesc("autoglm_xds_config_rejected", "1 while the latest configuration is rejected and the previous one served.", nil, nil)
	nackDesc     = prometheus.NewDesc("autoglm_xds_nacks_total", "NACKs received, by node and resource type.", []string{"node", "type_url"}, nil)
	weightDesc   = prometheus.NewDesc("autoglm_rollout_canary_weight", "The canary's share of traffic in percent.", []string{"model", "canary"}, nil)
	stateDesc    = prometheus.NewDesc("autoglm_rollout_state", "1 for the rollout's current state.", []string{"model", "state"}, nil)
	rolloutState = []string{rollout.Progressing, rollout.Promoted, rollout.RolledBack, rollout.Aborted}
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{infoDesc, rejectDesc, nackDesc, weightDesc, stateDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Status()
	if st.Version != "" {
		ch <- prometheus.MustNewConstMetric(infoDesc, prometheus.GaugeValue, 1, st.Version)
	}
	rejected := 0.0
	if st.LastError != "" {
		rejected = 1
	}
	ch <- prometheus.MustNewConstMetric(rejectDesc, prometheus.GaugeValue, rejected)
	for _, n := range st.Nacks {
		ch <- prometheus.MustNewConstMetric(nackDesc, prometheus.CounterValue, float64(n.Count), n.Node, n.TypeURL)
	}
	if c.ro == nil {
		return
	}
	rs := c.ro.Status()
	ch <- prometheus.MustNewConstMetric(weightDesc, prometheus.GaugeValue, float64(rs.Weight), rs.Plan.Model, rs.Plan.Canary)
	for _, s := range rolloutState {
		v := 0.0
		if s == rs.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, v, rs.Plan.Model, s)
	}
}
