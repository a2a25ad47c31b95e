package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/config"
)

// TestUnknownFields: a newer SDK's field (the official Go SDK adds it with
// WithJSONSet) is served by default as vLLM serves it — the local engine
// ignores it and says so in a Warning header, a remote engine is sent it —
// and refused with a 400 naming it under server.unknown_fields: reject.
func TestUnknownFields(t *testing.T) {
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{Model: "autoglm-test", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		MaxTokens: openai.Int(4)}
	future := []option.RequestOption{option.WithJSONSet("future_field", map[string]any{"a": 1}), option.WithJSONSet("vendor_knob", true)}

	t.Run("local engine ignores, with a warning", func(t *testing.T) {
		var resp *http.Response
		c := client(start(t))
		got, err := c.Chat.Completions.New(ctx, params, append(future, option.WithResponseInto(&resp))...)
		if err != nil || got.Usage.CompletionTokens != 4 {
			t.Fatalf("%+v %v", got, err)
		}
		if w := resp.Header.Get("Warning"); !strings.Contains(w, "Unrecognized request arguments ignored: future_field, vendor_knob") {
			t.Errorf("Warning header %q", w)
		}
	})
	t.Run("reject", func(t *testing.T) {
		cfg := testConfig()
		cfg.Server.UnknownFields = "reject"
		sc := startWith(t, cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model, ContextLength: 512}))
		c := client(sc)
		_, err := c.Chat.Completions.New(ctx, params, future...)
		var ae *openai.Error
		if !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.Message, "Unrecognized request argument supplied: ") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("remote engine is sent them", func(t *testing.T) {
		up := upstream(t, nil, nil)
		var mu sync.Mutex
		var bodies []string
		target, _ := url.Parse(up.url)
		rp := httputil.NewSingleHostReverseProxy(target)
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				bodies = append(bodies, string(b))
				mu.Unlock()
				r.Body = io.NopCloser(bytes.NewReader(b))
			}
			rp.ServeHTTP(w, r)
		}))
		defer proxy.Close()
		rs := remoteSidecar(t, &sidecar{url: proxy.URL}, 2, func(*config.Config) {})
		var resp *http.Response
		c := client(rs)
		got, err := c.Chat.Completions.New(ctx, params, append(future, option.WithResponseInto(&resp))...)
		if err != nil || got.Usage.CompletionTokens != 4 {
			t.Fatalf("%+v %v", got, err)
		}
		if w := resp.Header.Get("Warning"); w != "" {
			t.Errorf("a remote engine was sent the fields, yet Warning %q", w)
		}
		mu.Lock()
		last := bodies[len(bodies)-1]
		mu.Unlock()
		if !strings.Contains(last, `"future_field":{"a":1}`) || !strings.Contains(last, `"vendor_knob":true`) || !strings.Contains(last, `"model":"autoglm-test"`) {
			t.Errorf("upstream got %s", last)
		}
	})
}

// TestRetrieveModel: GET /v1/models/{id} through the official SDK — the
// served model, and 404 model_not_found for another (ids may hold "/").
func TestRetrieveModel(t *testing.T) {
	c := client(start(t))
	m, err := c.Models.Get(context.Background(), "autoglm-test")
	if err != nil || m.ID != "autoglm-test" || m.Object != "model" || m.OwnedBy != "autoglm" {
		t.Fatalf("%+v %v", m, err)
	}
	_, err = c.Models.Get(context.Background(), "Qwen/Qwen2.5-7B-Instruct")
	var ae *openai.Error
	if !errors.As(err, &ae) || ae.StatusCode != 404 || ae.Code != "model_not_found" {
		t.Fatalf("another model: %v", err)
	}
}
