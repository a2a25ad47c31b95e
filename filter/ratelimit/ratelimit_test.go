package ratelimit

import (
	"encoding/json"
	"testing"
	"time"
)

func TestRequestIsProtobufJSON(t *testing.T) {
	b := Request("autoglm", [][2]string{{"tenant", "spiffe://m/ns/a/sa/\"x\"\n"}, {"model", "qwen\xff"}}, 3)
	var r struct {
		Domain      string `json:"domain"`
		Descriptors []struct {
			Entries []struct{ Key, Value string } `json:"entries"`
		} `json:"descriptors"`
		HitsAddend int `json:"hitsAddend"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if r.Domain != "autoglm" || r.HitsAddend != 3 || len(r.Descriptors) != 1 || len(r.Descriptors[0].Entries) != 2 ||
		r.Descriptors[0].Entries[0].Value != "spiffe://m/ns/a/sa/\"x\"\n" || r.Descriptors[0].Entries[1].Value != "qwen\uFFFD" {
		t.Fatalf("%s → %+v", b, r)
	}
}

func TestParseResponse(t *testing.T) {
	v, err := ParseResponse([]byte(`{"overallCode":"OK","statuses":[{"code":"OK","currentLimit":{"requestsPerUnit":5,"unit":"MINUTE"},"limitRemaining":4,"durationUntilReset":"30s"}]}`))
	if err != nil || v.OverLimit {
		t.Fatalf("%+v %v", v, err)
	}
	v, err = ParseResponse([]byte(`{"overallCode":"OVER_LIMIT","statuses":[{"code":"OK","currentLimit":{"requestsPerUnit":1}},` +
		`{"code":"OVER_LIMIT","currentLimit":{"requestsPerUnit":5,"unit":"MINUTE"},"durationUntilReset":"53.5s"}]}`))
	if err != nil || !v.OverLimit || v.Limit != 5 || v.Remaining != 0 || v.Reset != 53500*time.Millisecond {
		t.Fatalf("%+v %v", v, err)
	}
	for _, bad := range []string{``, `{"overallCode":"UNKNOWN"}`, `{}`, `[`, `{"overallCode":7}`} {
		if _, err := ParseResponse([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte(`{"overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT","currentLimit":{"requestsPerUnit":5},"durationUntilReset":"1s"}]}`))
	f.Add([]byte(`{"overallCode":"OK"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseResponse(b)
		if err == nil && (v.Reset < 0 || (!v.OverLimit && v != Verdict{})) {
			t.Fatalf("%+v", v)
		}
	})
}

func FuzzRequest(f *testing.F) {
	f.Add("autoglm", "spiffe://m/ns/a/sa/b", "qwen", 1)
	f.Fuzz(func(t *testing.T, domain, tenant, model string, hits int) {
		var r struct {
			Domain      string `json:"domain"`
			Descriptors []struct {
				Entries []struct{ Key, Value string } `json:"entries"`
			} `json:"descriptors"`
			HitsAddend int `json:"hitsAddend"`
		}
		if err := json.Unmarshal(Request(domain, [][2]string{{"tenant", tenant}, {"model", model}}, hits), &r); err != nil {
			t.Fatal(err)
		}
		// encoding/json reads invalid UTF-8 as U+FFFD, as quote writes it.
		var want string
		_ = json.Unmarshal(mustMarshal(tenant), &want)
		if r.Domain == "" && domain != "" || r.HitsAddend != hits || r.Descriptors[0].Entries[0].Value != want {
			t.Fatalf("%+v", r)
		}
	})
}

func mustMarshal(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
