// Package metrics is autoglm-xds's Prometheus collector: the served
// snapshot, rejected configurations, NACKs, and the canary rollout's
// weight and state.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/open-autoglm/autoglm/xds/rollout"
	"github.com/open-autoglm/autoglm/xds/server"
)

// Collector reads the control plane's state at scrape time.
type Collector struct {
	Server *server.Server
	// Rollout returns the rollout's status; nil when no rollout runs.
	Rollout func() rollout.Status
}

var (
	infoDesc     = prometheus.NewDesc("autoglm_xds_snapshot_info", "The served snapshot's version.", []string{"version"}, nil)
	rejectDesc   = prometheus.NewDesc("autoglm_xds_config_rejected", "1 while the latest configuration is rejected and the previous one served.", nil, nil)
	nackDesc     = prometheus.NewDesc("autoglm_xds_nacks_total", "NACKs received, by node and resource type.", []string{"node", "type_url"}, nil)
	weightDesc   = prometheus.NewDesc("autoglm_rollout_canary_weight", "The canary's share of traffic in percent.", []string{"model", "canary"}, nil)
	stateDesc    = prometheus.NewDesc("autoglm_rollout_state", "1 for the rollout's current state.", []string{"model", "state"}, nil)
	rolloutState = []string{rollout.Progressing, rollout.Promoted, rollout.RolledBack, rollout.Aborted}
)

func (c Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{infoDesc, rejectDesc, nackDesc, weightDesc, stateDesc} {
		ch <- d
	}
}

func (c Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.Server.Status()
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
	if c.Rollout == nil {
		return
	}
	rs := c.Rollout()
	ch <- prometheus.MustNewConstMetric(weightDesc, prometheus.GaugeValue, float64(rs.Weight), rs.Plan.Model, rs.Plan.Canary)
	for _, s := range rolloutState {
		v := 0.0
		if s == rs.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, v, rs.Plan.Model, s)
	}
}
