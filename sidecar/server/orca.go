package server

import (
	"time"

	"google.golang.org/grpc/orca"
)

// orcaMetrics is the sidecar's load as gRPC clients read it (gRFC A51,
// A58): per call in the binary endpoint-load-metrics-bin trailer, and
// out of band from the OpenRcaService. Weighted round robin weighs an
// endpoint by qps / application utilization. (Envoy's HTTP clients read
// the same figures from the TEXT endpoint-load-metrics header, s.orca.)
type orcaMetrics struct{ s *Server }

func (o orcaMetrics) ServerMetrics() *orca.ServerMetrics {
	s := o.s
	l, queued := s.be.load()
	util := 0.0
	if l.Capacity > 0 {
		util = float64(l.Running+queued) / float64(l.Capacity)
	}
	qps, eps := s.m.Rates(time.Now())
	sm := &orca.ServerMetrics{CPUUtilization: -1, MemUtilization: -1, AppUtilization: util, QPS: qps, EPS: eps,
		Utilization: map[string]float64{}, NamedMetrics: map[string]float64{"queue_depth": float64(queued)}}
	if l.KVTotal > 0 {
		sm.Utilization["kv_utilization"] = float64(l.KVUsed) / float64(l.KVTotal)
	}
	if s.gpu != nil {
		g, mem := s.gpu.Load()
		sm.Utilization["gpu_utilization"], sm.Utilization["gpu_memory_utilization"] = g, mem
	}
	return sm
}
