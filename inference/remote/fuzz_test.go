package remote

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// FuzzStream: whatever the upstream sends, reading its stream ends with
// io.EOF, an *Error or ErrUnavailable — never a panic or a loop.
func FuzzStream(f *testing.F) {
	for _, s := range []string{
		"data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"é\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1}}\n\n",
		"data: {\"error\":{\"message\":\"x\",\"code\":1}}\n\n",
		"data: {\"error\":\"flat\"}\n\n",
		"data:[DONE]",
		"event: x\nid: 3\n\n:\n",
		"data: null\n\n",
		"data: {\"choices\":null}\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		s := newStream(context.Background(), io.NopCloser(strings.NewReader(body)))
		for i := 0; ; i++ {
			if i > len(body)+1 {
				t.Fatal("more pieces than input bytes")
			}
			_, err := s.Next()
			if err == nil {
				continue
			}
			var e *Error
			if err != io.EOF && !errors.As(err, &e) && !errors.Is(err, ErrUnavailable) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
	})
}
