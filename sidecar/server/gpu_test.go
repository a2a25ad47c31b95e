package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/open-autoglm/autoglm/inference/gpu"
	"github.com/open-autoglm/autoglm/inference/gpu/gputest"
	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

func TestGPUTelemetryAndHealth(t *testing.T) {
	dgx := gputest.NewDGX()
	mon, err := gpu.Open(dgx, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	sc := startWith(t, cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512}), func(s *Server) {
		s.AttachGPU(mon, 10*time.Millisecond)
	})
	resp, _ := post(t, sc.url+"/v1/chat/completions", chatBody, nil)
	orca := resp.Header.Get(telemetry.ORCAHeader)
	if !strings.Contains(orca, "named_metrics.gpu_utilization=0.7") || !strings.Contains(orca, "named_metrics.gpu_memory_utilization=0.2") {
		t.Fatalf("ORCA without GPU load: %q", orca)
	}
	body := get(t, sc.url+"/metrics")
	for _, want := range []string{
		`autoglm_gpu_memory_total_bytes{gpu="7"`,
		`autoglm_gpu_utilization_ratio{gpu="3"`,
		`autoglm_gpu_temperature_celsius{gpu="0"`,
		`autoglm_gpu_power_watts{gpu="0"`,
		`reason="hw_thermal_slowdown"`,
		`autoglm_gpu_ecc_uncorrected_errors_total{gpu="1"`,
		`autoglm_gpu_healthy{gpu="5"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	hc := healthpb.NewHealthClient(dial(t, sc))
	if h, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before the failure: %v %v", h, err)
	}

	// A critical Xid turns the sidecar not-ready, on HTTP and gRPC.
	dgx.Events <- nvml.EventData{Device: dgx.Devices[5], EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	for sc.Ready() {
		time.Sleep(time.Millisecond)
	}
	r, err := http.Get(sc.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 503 || !strings.Contains(string(b), "gpu failure") || !strings.Contains(string(b), "Xid 79") {
		t.Fatalf("readyz after Xid 79: %d %s", r.StatusCode, b)
	}
	if h, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health after the failure: %v %v", h, err)
	}
	if !strings.Contains(get(t, sc.url+"/metrics"), `autoglm_gpu_xid_errors_total{gpu="5",`) {
		t.Error("no Xid counter")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return string(b)
}
