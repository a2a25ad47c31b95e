package telemetry

import (
	"strconv"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/sidecar/admission"
)

// parseTEXT reads a report the way Envoy's TEXT parser does: a "TEXT "
// prefix, then comma-separated key=value pairs with numeric values.
func parseTEXT(t *testing.T, h string) map[string]float64 {
	t.Helper()
	body, ok := strings.CutPrefix(h, "TEXT ")
	if !ok {
		t.Fatalf("no TEXT prefix: %q", h)
	}
	out := map[string]float64{}
	for _, kv := range strings.Split(body, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			t.Fatalf("pair %q", kv)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			t.Fatalf("value of %s: %q", k, v)
		}
		out[k] = f
	}
	return out
}

func TestORCA(t *testing.T) {
	for _, tc := range []struct {
		running, queued, maxBatch, kvUsed, kvTotal int
		util, depth, kv                            float64
	}{
		{0, 0, 32, 0, 1000, 0, 0, 0},
		{16, 0, 32, 250, 1000, 0.5, 0, 0.25},
		{32, 16, 32, 1000, 1000, 1.5, 16, 1}, // work waiting: utilisation above 1
		{1, 0, 0, 0, 0, 0, 0, 0},             // no divisions by zero
	} {
		m := parseTEXT(t, ORCA(tc.running, tc.queued, tc.maxBatch, tc.kvUsed, tc.kvTotal))
		if m["application_utilization"] != tc.util || m["named_metrics.queue_depth"] != tc.depth || m["named_metrics.kv_utilization"] != tc.kv || len(m) != 3 {
			t.Errorf("%+v: %v", tc, m)
		}
	}
}

func TestORCAExtraNamedMetrics(t *testing.T) {
	m := parseTEXT(t, ORCA(1, 0, 4, 0, 10, Named{"gpu_utilization", 0.75}, Named{"gpu_memory_utilization", 0.5}))
	if m["named_metrics.gpu_utilization"] != 0.75 || m["named_metrics.gpu_memory_utilization"] != 0.5 || m["application_utilization"] != 0.25 {
		t.Fatalf("%v", m)
	}
}

// TestReasonsMatchAdmission: the rejection reasons the admission queue
// gives are the label values this package declares.
func TestReasonsMatchAdmission(t *testing.T) {
	for err, want := range map[error]string{
		admission.ErrQueueFull: ReasonQueueFull, admission.ErrDeadline: ReasonDeadline, admission.ErrClosed: ReasonDraining,
	} {
		if got := admission.Reason(err); got != want {
			t.Errorf("%v: %q, want %q", err, got, want)
		}
	}
}
