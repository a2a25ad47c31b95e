package cache

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/open-autoglm/autoglm/internal/redistest"
)

func TestEndpointWithRedis(t *testing.T) {
	addr := redistest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	reg := prometheus.NewRegistry()
	srv := httptest.NewServer(Handler(Redis{C: rc, Prefix: "autoglm:"}, Config{MaxEntryBytes: 1024, MaxTTL: time.Hour, Timeout: time.Second}, reg))
	defer srv.Close()
	do := func(method, key string, body []byte, ttl string) (*http.Response, []byte) {
		req, _ := http.NewRequest(method, srv.URL+"/v1/cache/"+key, bytes.NewReader(body))
		if ttl != "" {
			req.Header.Set(HeaderTTL, ttl)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp, b.Bytes()
	}
	key := "autoglm:cache:0123abcd:ff00"
	if resp, _ := do("GET", key, nil, ""); resp.StatusCode != 404 {
		t.Fatalf("empty: %d", resp.StatusCode)
	}
	entry := []byte("\x00\x01binary entry\xff")
	if resp, b := do("PUT", key, entry, "60"); resp.StatusCode != 204 {
		t.Fatalf("put: %d %s", resp.StatusCode, b)
	}
	if resp, b := do("GET", key, nil, ""); resp.StatusCode != 200 || !bytes.Equal(b, entry) {
		t.Fatalf("get: %d %q", resp.StatusCode, b)
	}
	// In Redis under the prefix, with the TTL.
	if ttl := rc.TTL(context.Background(), "autoglm:"+key).Val(); ttl <= 0 || ttl > 60*time.Second {
		t.Fatalf("redis TTL %v", ttl)
	}
	// A TTL beyond max_ttl is capped.
	do("PUT", "k2", entry, "999999")
	if ttl := rc.TTL(context.Background(), "autoglm:k2").Val(); ttl > time.Hour || ttl <= 0 {
		t.Fatalf("capped TTL %v", ttl)
	}
	// One so large that seconds × 10^9 wraps negative (Redis would keep
	// the key forever): capped too.
	do("PUT", "k3", entry, "9223372036854775807")
	if ttl := rc.TTL(context.Background(), "autoglm:k3").Val(); ttl > time.Hour || ttl <= 0 {
		t.Fatalf("huge TTL: Redis TTL %v (want an expiry within the cap)", ttl)
	}
	for _, tc := range []struct {
		method, key, ttl string
		body             []byte
		want             int
	}{
		{"PUT", "k3", "", entry, 400},
		{"PUT", "k3", "0", entry, 400},
		{"PUT", "bad%20key", "5", entry, 400},
		{"GET", strings.Repeat("k", 201), "", nil, 400},
		{"PUT", "k4", "5", bytes.Repeat([]byte("x"), 2000), 413},
	} {
		if resp, _ := do(tc.method, tc.key, tc.body, tc.ttl); resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.key, resp.StatusCode, tc.want)
		}
	}
	// Redis gone: 503, which the filter treats as a miss (fail-open).
	rc2 := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	down := httptest.NewServer(Handler(Redis{C: rc2}, Config{MaxEntryBytes: 1024, Timeout: 200 * time.Millisecond}, nil))
	defer down.Close()
	resp, err := http.Get(down.URL + "/v1/cache/k")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("redis down: %v %v", resp, err)
	}
	mfs, _ := reg.Gather()
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "autoglm_cache_requests_total"
	}
	if !found {
		t.Fatal("no autoglm_cache_requests_total")
	}
}
