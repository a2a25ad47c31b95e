package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/open-autoglm/autoglm/inference"
)

// sse serves body as an event stream after checking the request.
func sse(t *testing.T, check func(*http.Request, map[string]any), body string) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if check != nil {
			var req map[string]any
			b, _ := io.ReadAll(r.Body)
			if err := jsonUnmarshal(b, &req); err != nil {
				t.Errorf("request body: %v", err)
			}
			check(r, req)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{URL: srv.URL + "/v1/", Model: "up", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func drain(s *Stream) (string, error) {
	var b strings.Builder
	for {
		t, err := s.Next()
		b.WriteString(t)
		if err != nil {
			return b.String(), err
		}
	}
}

func TestGenerateChat(t *testing.T) {
	c := sse(t, func(r *http.Request, req map[string]any) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer k" || r.Header.Get("X-Envoy-Expected-Rq-Timeout-Ms") == "" {
			t.Errorf("path %s headers %v", r.URL.Path, r.Header)
		}
		if req["model"] != "up" || req["stream"] != true || req["max_tokens"] != 5.0 || req["temperature"] != 0.0 || req["seed"] != 7.0 ||
			req["top_k"] != 3.0 || req["stream_options"].(map[string]any)["include_usage"] != true || req["top_p"] != nil {
			t.Errorf("request %v", req)
		}
		if m := req["messages"].([]any); len(m) != 2 || m[1].(map[string]any)["content"] != "hi" {
			t.Errorf("messages %v", m)
		}
	}, `: comment

data: {"choices":[{"delta":{"role":"assistant"}}]}

data: {"choices":[{"delta":{"content":"Hel"}}]}
data: {"choices":[{"delta":{"content":"lo"},"finish_reason":null}]}

data: {"choices":[{"delta":{},"finish_reason":"length"}]}

data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}

data: [DONE]

`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	five := 5
	s, err := c.Generate(ctx, &Request{Chat: []inference.Message{{Role: "system", Content: "x"}, {Role: "user", Content: "hi"}},
		MaxTokens: &five, Sampling: inference.Sampling{TopK: 3, Seed: 7, HasSeed: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	text, err := drain(s)
	if text != "Hello" || err != io.EOF || s.Finish() != "length" || s.Usage() != (Usage{9, 2}) {
		t.Fatalf("%q %v finish %q usage %+v", text, err, s.Finish(), s.Usage())
	}
}

func TestGenerateCompletionWithoutUsageOrDone(t *testing.T) {
	c := sse(t, func(r *http.Request, req map[string]any) {
		if r.URL.Path != "/v1/completions" || fmt.Sprint(req["prompt"]) != "[1 2 3]" {
			t.Errorf("%s %v", r.URL.Path, req)
		}
	}, "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\",\"finish_reason\":\"stop\"}]}\n\n")
	s, err := c.Generate(context.Background(), &Request{Tokens: []int{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	text, err := drain(s)
	if text != "ab" || err != io.EOF || s.Finish() != "stop" || s.Usage() != (Usage{CompletionTokens: 2}) {
		t.Fatalf("%q %v %q %+v", text, err, s.Finish(), s.Usage())
	}
}

func TestStreamFailures(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		check      func(error) bool
	}{
		{"cut before the end", "data: {\"choices\":[{\"text\":\"a\"}]}\n\n", func(err error) bool { return errors.Is(err, ErrUnavailable) }},
		{"malformed event", "data: {\"choices\":\n\n", func(err error) bool { return errors.Is(err, ErrUnavailable) }},
		{"error event", "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"code\":\"x\"}}\n\ndata: [DONE]\n\n",
			func(err error) bool {
				var e *Error
				return errors.As(err, &e) && e.Message == "boom" && e.Code == "x" && e.Status == 500
			}},
		{"oversized event", "data: " + strings.Repeat("a", maxEventBytes+1) + "\n\n", func(err error) bool { return errors.Is(err, ErrUnavailable) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sse(t, nil, tc.body).Generate(context.Background(), &Request{Prompt: "p"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := drain(s); !tc.check(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestErrorAnswers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		body    string
		want    Error
		retryIn string
	}{
		{"openai shape", 400, `{"error":{"message":"too long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`,
			Error{Status: 400, Type: "invalid_request_error", Code: "context_length_exceeded", Param: "messages", Message: "too long"}, ""},
		{"vllm numeric code", 400, `{"error":{"message":"bad","type":"BadRequestError","param":null,"code":400}}`,
			Error{Status: 400, Type: "BadRequestError", Message: "bad"}, ""},
		{"plain text", 502, "upstream connect error\n", Error{Status: 502, Message: "upstream connect error"}, ""},
		{"empty", 503, "", Error{Status: 503, Message: "Service Unavailable", RetryAfter: 3 * time.Second}, "3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if tc.retryIn != "" {
					w.Header().Set("Retry-After", tc.retryIn)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			c, _ := New(Config{URL: srv.URL, Model: "m"})
			_, err := c.Generate(context.Background(), &Request{Prompt: "p"})
			var e *Error
			if !errors.As(err, &e) || *e != tc.want {
				t.Fatalf("got %#v", err)
			}
		})
	}
}

func TestTransportFailuresAndCancellation(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"text\":\"a\"}]}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a stream that stalls until the caller goes
	}))
	defer srv.Close()
	c, _ := New(Config{URL: srv.URL, Model: "m"})
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.Generate(ctx, &Request{Prompt: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if text, err := s.Next(); text != "a" || err != nil {
		t.Fatalf("%q %v", text, err)
	}
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := s.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("after cancel: %v", err)
	}
	s.Close()

	srv.Close()
	if _, err := c.Generate(context.Background(), &Request{Prompt: "p"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("closed server: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{{URL: "", Model: "m"}, {URL: "ftp://x", Model: "m"}, {URL: "http://", Model: "m"}, {URL: "http://x"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

func TestDiscovery(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			io.WriteString(w, `# HELP autoglm_max_running_sequences x
# TYPE autoglm_max_running_sequences gauge
autoglm_max_running_sequences 48
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",max_num_seqs="256"} 1.0
`)
		case "/v1/models":
			io.WriteString(w, `{"object":"list","data":[{"id":"m","object":"model","max_model_len":8192}]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c, _ := New(Config{URL: srv.URL, Model: "m"})
	ctx := context.Background()
	for _, tc := range []struct {
		g    Gauge
		want float64
		err  string
	}{
		{Gauge{Metric: "autoglm_max_running_sequences"}, 48, ""},
		{Gauge{Metric: "vllm:cache_config_info", Label: "max_num_seqs"}, 256, ""},
		{Gauge{Metric: "vllm:cache_config_info", Label: "nope"}, 0, "has no label nope"},
		{Gauge{Metric: "missing"}, 0, "has no missing"},
	} {
		v, err := c.ReadGauge(ctx, tc.g)
		if v != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v %v", tc.g, v, err)
		}
	}
	ms, err := c.Models(ctx)
	if err != nil || len(ms) != 1 || ms[0] != (Model{ID: "m", MaxModelLen: 8192}) {
		t.Fatalf("%+v %v", ms, err)
	}
}
