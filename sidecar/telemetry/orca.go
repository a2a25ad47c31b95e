package telemetry

import "strconv"

// ORCAHeader is the response header Envoy reads ORCA load reports from
// (endpoint-load-metrics), in net/http's canonical form.
const ORCAHeader = "Endpoint-Load-Metrics"

// ORCA formats a load report in Envoy's TEXT format:
// "TEXT application_utilization=0.5, named_metrics.queue_depth=3, named_metrics.kv_utilization=0.25".
// utilization is (running+queued)/max batch size and may exceed 1 when work
// waits, which is what load-aware balancing needs to see.
//
// extra adds named metrics (the GPU's, when there is one).
func ORCA(running, queued, maxBatch, kvUsed, kvTotal int, extra ...Named) string {
	util := 0.0
	if maxBatch > 0 {
		util = float64(running+queued) / float64(maxBatch)
	}
	kv := 0.0
	if kvTotal > 0 {
		kv = float64(kvUsed) / float64(kvTotal)
	}
	b := make([]byte, 0, 96)
	b = append(b, "TEXT application_utilization="...)
	b = strconv.AppendFloat(b, util, 'g', 4, 64)
	b = append(b, ", named_metrics.queue_depth="...)
	b = strconv.AppendInt(b, int64(queued), 10)
	b = append(b, ", named_metrics.kv_utilization="...)
	b = strconv.AppendFloat(b, kv, 'g', 4, 64)
	for _, n := range extra {
		b = append(b, ", named_metrics."...)
		b = append(b, n.Name...)
		b = append(b, '=')
		b = strconv.AppendFloat(b, n.Value, 'g', 4, 64)
	}
	return string(b)
}

// Named is an ORCA named metric.
type Named struct {
	Name  string
	Value float64
}
