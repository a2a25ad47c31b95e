package telemetry

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
)

// genAI holds the OpenTelemetry GenAI semantic-convention instruments in
// the Prometheus form OpenTelemetry's exporter gives them (dots to
// underscores, the unit as a suffix): gen_ai.server.request.duration,
// gen_ai.server.time_to_first_token, gen_ai.server.time_per_output_token
// and gen_ai.client.token.usage, with the conventions' attributes as
// labels and their advised bucket boundaries.
type genAI struct {
	duration, ttft, tpot, tokens *prometheus.HistogramVec
}

// Label names: the conventions' attribute names, dots to underscores.
var genAILabels = []string{"gen_ai_operation_name", "gen_ai_request_model", "gen_ai_provider_name", "error_type"}

func newGenAI() genAI {
	h := func(name, help string, buckets []float64, extra ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets},
			append(append([]string{}, genAILabels...), extra...))
	}
	return genAI{
		duration: h("gen_ai_server_request_duration_seconds", "GenAI server request duration (gen_ai.server.request.duration): time to last byte, or to the error.",
			[]float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}),
		ttft: h("gen_ai_server_time_to_first_token_seconds", "Time to generate the first token of successful responses (gen_ai.server.time_to_first_token).",
			[]float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0}),
		tpot: h("gen_ai_server_time_per_output_token_seconds", "Time per output token after the first, of successful responses (gen_ai.server.time_per_output_token).",
			[]float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5}),
		tokens: h("gen_ai_client_token_usage", "Input and output tokens per request (gen_ai.client.token.usage, recorded by the server that counted them).",
			[]float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}, "gen_ai_token_type"),
	}
}

func (g genAI) collectors() []prometheus.Collector {
	return []prometheus.Collector{g.duration, g.ttft, g.tpot, g.tokens}
}

// ProviderName is gen_ai.provider.name for this server.
const ProviderName = "autoglm"

// Finished is what one request's end says about it, for the GenAI
// instruments.
type Finished struct {
	Operation, Model string
	// ErrorType is "" for a success, else the error's class (the HTTP
	// status, "canceled", the API error code).
	ErrorType string
	// Arrived, FirstToken and Done are its timestamps (FirstToken zero
	// when none came).
	Arrived, FirstToken, Done time.Time
	PromptTokens              int
	CompletionTokens          int
}

// ObserveGenAI records a finished request. ctx's span, when sampled,
// becomes the exemplar of the latency observations (trace_id, span_id),
// so that a slow bucket leads to a trace.
func (m *Metrics) ObserveGenAI(ctx context.Context, f Finished) {
	if m == nil {
		return
	}
	lv := make([]string, 4, 5) // room for the token type
	lv[0], lv[1], lv[2], lv[3] = f.Operation, f.Model, ProviderName, f.ErrorType
	var ex prometheus.Labels
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		ex = prometheus.Labels{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}
	}
	observe(m.genai.duration.WithLabelValues(lv...), f.Done.Sub(f.Arrived).Seconds(), ex)
	if f.ErrorType != "" {
		return
	}
	if !f.FirstToken.IsZero() {
		observe(m.genai.ttft.WithLabelValues(lv...), f.FirstToken.Sub(f.Arrived).Seconds(), ex)
		if f.CompletionTokens > 1 {
			observe(m.genai.tpot.WithLabelValues(lv...), f.Done.Sub(f.FirstToken).Seconds()/float64(f.CompletionTokens-1), ex)
		}
	}
	m.genai.tokens.WithLabelValues(append(lv, "input")...).Observe(float64(f.PromptTokens))
	m.genai.tokens.WithLabelValues(append(lv, "output")...).Observe(float64(f.CompletionTokens))
}

func observe(o prometheus.Observer, v float64, ex prometheus.Labels) {
	if eo, ok := o.(prometheus.ExemplarObserver); ok && ex != nil {
		eo.ObserveWithExemplar(v, ex)
		return
	}
	o.Observe(v)
}

// gieCollector exports the model-server metrics that the Gateway API
// Inference Extension's endpoint picker scrapes from each pod of an
// InferencePool, under the names it reads from vLLM by default
// (vllm:num_requests_waiting, vllm:num_requests_running,
// vllm:kv_cache_usage_perc — a fraction, as vLLM's is — and the older
// vllm:gpu_cache_usage_perc), with vLLM's model_name label. They are the
// same readings as autoglm_queue_depth, autoglm_running_sequences and
// autoglm_kv_utilization.
type gieCollector struct {
	model   string
	started float64
	depths  func() []int
	load    func() Load
}

var (
	gieWaitingDesc = prometheus.NewDesc("vllm:num_requests_waiting", "Requests waiting to be processed (the Gateway API Inference Extension's queue-length signal).", []string{"model_name"}, nil)
	gieRunningDesc = prometheus.NewDesc("vllm:num_requests_running", "Requests running on the engine.", []string{"model_name"}, nil)
	gieKVDesc      = prometheus.NewDesc("vllm:kv_cache_usage_perc", "KV-cache usage, 0 to 1 (1 = full).", []string{"model_name"}, nil)
	gieKVOldDesc   = prometheus.NewDesc("vllm:gpu_cache_usage_perc", "KV-cache usage, 0 to 1 (vLLM's older name).", []string{"model_name"}, nil)
	gieLoRADesc    = prometheus.NewDesc("vllm:lora_requests_info", "LoRA adapters running and waiting (none: this server runs no adapters); the value is the start time, as vLLM's.", []string{"model_name", "running_lora_adapters", "waiting_lora_adapters", "max_lora"}, nil)
	gieCacheDesc   = prometheus.NewDesc("vllm:cache_config_info", "KV-cache configuration: the token budget as num_gpu_blocks of block_size 1.", []string{"model_name", "block_size", "num_gpu_blocks"}, nil)
)

func (c *gieCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- gieWaitingDesc
	ch <- gieRunningDesc
	ch <- gieKVDesc
	ch <- gieKVOldDesc
	ch <- gieCacheDesc
	ch <- gieLoRADesc
}

func (c *gieCollector) Collect(ch chan<- prometheus.Metric) {
	waiting := 0
	for _, n := range c.depths() {
		waiting += n
	}
	l := c.load()
	kv := 0.0
	if l.KVTotal > 0 {
		kv = float64(l.KVUsed) / float64(l.KVTotal)
	}
	ch <- prometheus.MustNewConstMetric(gieWaitingDesc, prometheus.GaugeValue, float64(waiting), c.model)
	ch <- prometheus.MustNewConstMetric(gieRunningDesc, prometheus.GaugeValue, float64(l.Running), c.model)
	ch <- prometheus.MustNewConstMetric(gieKVDesc, prometheus.GaugeValue, kv, c.model)
	ch <- prometheus.MustNewConstMetric(gieKVOldDesc, prometheus.GaugeValue, kv, c.model)
	ch <- prometheus.MustNewConstMetric(gieCacheDesc, prometheus.GaugeValue, 1, c.model, "1", strconv.Itoa(l.KVTotal))
	ch <- prometheus.MustNewConstMetric(gieLoRADesc, prometheus.GaugeValue, c.started, c.model, "", "", "0")
}
