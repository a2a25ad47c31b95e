package server

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/telemetry"
)

type errBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func post(t *testing.T, url, body string, hdr map[string]string) (*http.Response, errBody) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e errBody
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%d: error body not in OpenAI's shape: %s", resp.StatusCode, b)
		}
	}
	return resp, e
}

const chatBody = `{"model":"autoglm-test","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`

func TestBadInput(t *testing.T) {
	cfg := testConfig()
	cfg.Server.MaxBodyBytes = 2048
	sc := startWith(t, cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512}))
	chat := sc.url + "/v1/chat/completions"
	for _, tc := range []struct {
		name, url, body string
		hdr             map[string]string
		status          int
		msg             string
	}{
		{"too large", chat, `{"model":"autoglm-test","messages":[{"role":"user","content":"` + strings.Repeat("a", 4096) + `"}]}`, nil, 413, "limit is 2048"},
		{"malformed", chat, `{"model":`, nil, 400, "invalid JSON"},
		{"invalid utf8", chat, "{\"model\":\"autoglm-test\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}", nil, 400, "UTF-8"},
		{"wrong type", chat, `{"model":"autoglm-test","messages":"hi"}`, nil, 400, "expected an array"},
		{"max tokens zero", chat, `{"model":"autoglm-test","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}`, nil, 400, "at least 1"},
		{"beyond context", chat, `{"model":"autoglm-test","max_tokens":600,"messages":[{"role":"user","content":"hi"}]}`, nil, 400, "maximum context length is 512"},
		{"unknown model", chat, `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, nil, 404, "does not exist"},
		{"bad priority", chat, chatBody, map[string]string{HeaderPriority: "high"}, 400, "non-negative integer"},
		{"bad envoy timeout", chat, chatBody, map[string]string{HeaderEnvoyTimeout: "soon"}, 400, "milliseconds"},
		{"bad grpc timeout", chat, chatBody, map[string]string{HeaderGRPCTimeout: "5x"}, 400, "unknown unit"},
		{"token out of vocabulary", sc.url + "/v1/completions", `{"model":"autoglm-test","prompt":[1,99999]}`, nil, 400, "outside the vocabulary"},
		{"unknown path", sc.url + "/v2/anything", `{}`, nil, 404, "Unknown path"},
		// Numbers at the edges: none may wrap (a sum or a product past 2^63).
		{"max tokens near 2^63", chat, `{"model":"autoglm-test","max_tokens":9223372036854775807,"messages":[{"role":"user","content":"hi"}]}`, nil, 400, "maximum context length is 512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, e := post(t, tc.url, tc.body, tc.hdr)
			if resp.StatusCode != tc.status || !strings.Contains(e.Error.Message, tc.msg) {
				t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, e.Error.Message, tc.status, tc.msg)
			}
		})
	}
	resp, err := http.Get(chat)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("GET on chat: %d, want 405", resp.StatusCode)
	}
	// The server is still healthy after all of that.
	if resp, _ := post(t, chat, chatBody, nil); resp.StatusCode != 200 {
		t.Fatalf("valid request after bad ones: %d", resp.StatusCode)
	}
}

// gated starts a sidecar whose engine holds each step until the gate
// opens; one slot, so one request runs and the rest queue.
func gated(t *testing.T, maxQueue int) (*sidecar, func()) {
	gate := make(chan struct{})
	cfg := testConfig()
	cfg.Batch.MaxBatchSize = 1
	cfg.Admission.MaxQueue = maxQueue
	eng := testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512, Slots: 1, Gate: gate})
	// Let the warm-up through, then hold the engine.
	go func() { gate <- struct{}{} }()
	sc := startWith(t, cfg, eng)
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	return sc, open
}

func waitLoad(t *testing.T, sc *sidecar, running, queued int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, q, _ := sc.sched.Load()
		if r == running && q == queued {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("load is %d running, %d queued; want %d, %d", r, q, running, queued)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestQueueFullIs429(t *testing.T) {
	sc, openGate := gated(t, 1)
	chat := sc.url + "/v1/chat/completions"
	low := map[string]string{HeaderPriority: "2"}
	var wg sync.WaitGroup
	codes := make([]atomic.Int32, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := post(t, chat, chatBody, low)
			codes[i].Store(int32(resp.StatusCode))
		}()
		waitLoad(t, sc, 1, i)
	}
	resp, e := post(t, chat, chatBody, low)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "2" || *e.Error.Code != telemetry.ReasonQueueFull {
		t.Fatalf("full queue: %d Retry-After=%q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), e)
	}
	// A higher-priority arrival sheds the queued low-priority request.
	wg.Add(1)
	vip := 0
	go func() {
		defer wg.Done()
		resp, _ := post(t, chat, chatBody, map[string]string{HeaderPriority: "0", HeaderTenant: "vip"})
		vip = resp.StatusCode
	}()
	for codes[1].Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	openGate()
	wg.Wait()
	if codes[0].Load() != 200 || codes[1].Load() != 429 || vip != 200 {
		t.Fatalf("running %d, queued low-priority %d (want shed: 429), vip %d", codes[0].Load(), codes[1].Load(), vip)
	}
}

func TestDeadlineWhileEngineBusy(t *testing.T) {
	sc, openGate := gated(t, 8)
	chat := sc.url + "/v1/chat/completions"
	done := make(chan int)
	go func() {
		resp, _ := post(t, chat, chatBody, nil)
		done <- resp.StatusCode
	}()
	waitLoad(t, sc, 1, 0)
	// The engine is stuck inside a step; a queued request with a 50 ms
	// deadline must still leave the queue when its deadline passes.
	resp, e := post(t, chat, chatBody, map[string]string{HeaderEnvoyTimeout: "50"})
	if resp.StatusCode != 429 || *e.Error.Code != telemetry.ReasonDeadline {
		t.Fatalf("expired in queue: %d %+v", resp.StatusCode, e)
	}
	if _, q, _ := sc.sched.Load(); q != 0 {
		t.Fatalf("%d still queued", q)
	}
	select {
	case <-done:
		t.Fatal("the running request finished although the engine is held")
	default:
	}
	openGate()
	if code := <-done; code != 200 {
		t.Fatalf("running request: %d", code)
	}
}

func TestDisconnectFreesSlot(t *testing.T) {
	cfg := testConfig()
	cfg.Batch.MaxBatchSize = 1
	sc := startWith(t, cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 100000, Slots: 1, StepCost: time.Millisecond}))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, sc.url+"/v1/completions",
		strings.NewReader(`{"model":"autoglm-test","prompt":"long","max_tokens":90000,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil || !strings.HasPrefix(string(buf), "data: ") {
		t.Fatalf("first bytes %q %v", buf, err)
	}
	cancel()
	resp.Body.Close()
	// The only slot must come free for the next request long before the
	// 90000 tokens of the abandoned one.
	r2, _ := post(t, sc.url+"/v1/chat/completions", chatBody, nil)
	if r2.StatusCode != 200 {
		t.Fatalf("next request: %d", r2.StatusCode)
	}
	waitLoad(t, sc, 0, 0)
}

func TestORCAHeaderAndMetrics(t *testing.T) {
	sc := start(t)
	resp, _ := post(t, sc.url+"/v1/chat/completions", chatBody, nil)
	orca := resp.Header.Get(telemetry.ORCAHeader)
	if !strings.HasPrefix(orca, "TEXT application_utilization=") || !strings.Contains(orca, "named_metrics.queue_depth=") || !strings.Contains(orca, "named_metrics.kv_utilization=") {
		t.Fatalf("ORCA header %q", orca)
	}
	m, err := http.Get(sc.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(m.Body)
	m.Body.Close()
	// Every per-model series carries the model label; the GenAI
	// instruments and the Inference Extension's gauges are there too.
	for _, want := range []string{
		`autoglm_queue_depth{model="autoglm-test",priority="3"} 0`,
		`autoglm_batch_size_count{model="autoglm-test"}`,
		`autoglm_time_to_first_token_seconds_count{model="autoglm-test"} 2`, // warm-up + request
		`autoglm_time_per_output_token_seconds_count{model="autoglm-test"} 1`,
		`autoglm_request_duration_seconds_count{model="autoglm-test",outcome="ok"} 2`,
		`autoglm_requests_total{api="chat",code="200",model="autoglm-test"} 1`,
		`autoglm_generation_tokens_total{model="autoglm-test"} 5`,
		`autoglm_rejections_total{model="autoglm-test",reason="queue_full"} 0`,
		`autoglm_kv_utilization{model="autoglm-test"} 0`,
		`gen_ai_server_request_duration_seconds_count{error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="autoglm",gen_ai_request_model="autoglm-test"} 1`,
		`gen_ai_server_time_to_first_token_seconds_count{error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="autoglm",gen_ai_request_model="autoglm-test"} 1`,
		`gen_ai_client_token_usage_sum{error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="autoglm",gen_ai_request_model="autoglm-test",gen_ai_token_type="output"} 4`,
		`vllm:num_requests_waiting{model_name="autoglm-test"} 0`,
		`vllm:kv_cache_usage_perc{model_name="autoglm-test"} 0`,
		`autoglm_build_info{goversion=`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", b)
	}
}

func TestDrain(t *testing.T) {
	sc, openGate := gated(t, 8)
	done := make(chan int)
	go func() {
		resp, _ := post(t, sc.url+"/v1/chat/completions", chatBody, nil)
		done <- resp.StatusCode
	}()
	waitLoad(t, sc, 1, 0)
	stopped := make(chan error)
	go func() { stopped <- sc.stop() }()
	for sc.Ready() {
		time.Sleep(time.Millisecond)
	}
	if _, err := sc.sched.Submit(context.Background(), batchRequest()); err == nil {
		t.Fatal("admitted a request while draining")
	}
	select {
	case <-stopped:
		t.Fatal("Run returned before the in-flight request finished")
	case <-time.After(20 * time.Millisecond):
	}
	openGate()
	if code := <-done; code != 200 {
		t.Fatalf("in-flight request during drain: %d", code)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run after drain: %v", err)
	}
}

// TestDrainTimeoutWithoutGRPC: a generation that would outlive the drain
// timeout is cut off there, and Run returns cleanly with no gRPC listener.
func TestDrainTimeoutWithoutGRPC(t *testing.T) {
	cfg := testConfig()
	cfg.Server.DrainTimeout = 50 * time.Millisecond
	srv := New(cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 100000, StepCost: time.Millisecond}), 0, slog.New(slog.DiscardHandler))
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url, stop := runHTTP(t, srv, hl)
	long := `{"model":"autoglm-test","max_tokens":90000,"messages":[{"role":"user","content":"hi"}]}`
	go http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(long))
	for r, _, _ := srv.sched.Load(); r == 0; r, _, _ = srv.sched.Load() {
		time.Sleep(time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestHugeTimeoutsCapped: timeouts so large that their nanoseconds pass
// 2^63 are capped at max_timeout like any long one, not wrapped into the
// past (an instant 429).
func TestHugeTimeoutsCapped(t *testing.T) {
	sc := startWith(t, testConfig(), testengine.New(testengine.Config{Model: "autoglm-test", ContextLength: 512}))
	chat := sc.url + "/v1/chat/completions"
	for _, tc := range []struct {
		body string
		hdr  map[string]string
	}{
		{chatBody, map[string]string{HeaderEnvoyTimeout: "9223372036854775807"}},
		{chatBody, map[string]string{HeaderGRPCTimeout: "99999999H"}},
		{`{"model":"autoglm-test","max_tokens":4,"timeout_ms":9223372036854775807,"messages":[{"role":"user","content":"hi"}]}`, nil},
	} {
		if resp, e := post(t, chat, tc.body, tc.hdr); resp.StatusCode != 200 {
			t.Errorf("%v %s: %d %s", tc.hdr, tc.body, resp.StatusCode, e.Error.Message)
		}
	}
	if d, err := ParseGRPCTimeout("99999999H"); err != nil || d <= 0 {
		t.Fatalf("99999999H: %v %v", d, err)
	}
}

func TestParseGRPCTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"1H": time.Hour, "2M": 2 * time.Minute, "3S": 3 * time.Second, "250m": 250 * time.Millisecond, "7u": 7 * time.Microsecond, "9n": 9} {
		if got, err := ParseGRPCTimeout(in); err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "5", "5x", "-1S", "123456789S", "aS"} {
		if _, err := ParseGRPCTimeout(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
