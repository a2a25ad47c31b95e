package server

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	giemetrics "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/backend/metrics"
	fwkdl "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/interface/datalayer"
)

// TestInferenceExtensionPickerReadsSidecar scrapes a sidecar with the
// Gateway API Inference Extension endpoint picker's own model-server
// metrics client (its Go module, v1.5.0), configured with the picker's
// default vLLM metric names: what it reads is the sidecar's load — one
// running request, two waiting, the KV cache in use — with no error.
func TestInferenceExtensionPickerReadsSidecar(t *testing.T) {
	sc, open := gated(t, 8)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			post(t, sc.url+"/v1/chat/completions", chatBody, nil)
		}()
	}
	defer wg.Wait()
	defer open()
	waitLoad(t, sc, 1, 2)

	// The picker's defaults (pkg/epp/server/options.go, and the vllm
	// engine of its metrics extractor).
	client, err := giemetrics.NewPodMetricsClientImpl(logr.Discard(), giemetrics.Config{
		ModelServerMetricsScheme: "http", ModelServerMetricsPath: "/metrics",
		TotalQueuedRequestsMetric: "vllm:num_requests_waiting", TotalRunningRequestsMetric: "vllm:num_requests_running",
		KVCacheUsagePercentageMetric: "vllm:kv_cache_usage_perc", LoRAInfoMetric: "vllm:lora_requests_info",
		CacheInfoMetric: "vllm:cache_config_info",
	})
	if err != nil {
		t.Fatal(err)
	}
	ep := &fwkdl.EndpointMetadata{PodName: "autoglm-0", MetricsHost: strings.TrimPrefix(sc.url, "http://")}
	got, err := client.FetchMetrics(context.Background(), ep, fwkdl.NewMetrics())
	if err != nil {
		t.Fatalf("the picker's client: %v", err)
	}
	_, _, kv := sc.sched.Load()
	if got.RunningRequestsSize != 1 || got.WaitingQueueSize != 2 || got.KVCacheUsagePercent <= 0 ||
		got.KVCacheUsagePercent != float64(kv)/float64(sc.sched.Info().KVTokens) || got.CacheNumBlocks != sc.sched.Info().KVTokens || got.CacheBlockSize != 1 {
		t.Errorf("the picker read %+v; the sidecar has 1 running, 2 waiting, %d of %d KV tokens", got, kv, sc.sched.Info().KVTokens)
	}
}
