package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/open-autoglm/autoglm/inference/testengine"
	"github.com/open-autoglm/autoglm/sidecar/identity"
)

// TestIdentityXFCC: behind the co-located Envoy (xfcc mode) the caller's
// ID is the tenant and must be allowed; the cache endpoint has its own
// list, so an application allowed to call the model cannot write entries
// that would answer other tenants.
func TestIdentityXFCC(t *testing.T) {
	app := spiffeid.RequireFromString("spiffe://mesh.local/ns/apps/sa/web")
	proxy := spiffeid.RequireFromString("spiffe://mesh.local/ns/autoglm/sa/autoglm-model")
	cfg := testConfig()
	sc := startWith(t, cfg, testengine.New(testengine.Config{Model: cfg.Engine.Model}), func(s *Server) {
		s.SetIdentity(&identity.Policy{Mode: "xfcc", Allow: map[string][]spiffeid.ID{"*": {app}, CacheScope: {proxy}}})
		s.AttachCache(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "cache") }))
	})
	do := func(method, path, body string, id spiffeid.ID) int {
		req, _ := http.NewRequest(method, sc.url+path, strings.NewReader(body))
		if !id.IsZero() {
			req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://mesh.local/x;URI="+id.String())
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	chat := `{"model":"autoglm-test","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`
	if c := do("POST", "/v1/chat/completions", chat, app); c != 200 {
		t.Fatalf("allowed app: %d", c)
	}
	if c := do("POST", "/v1/chat/completions", chat, proxy); c != 403 {
		t.Fatalf("an ID not on the model's list: %d", c)
	}
	if c := do("POST", "/v1/chat/completions", chat, spiffeid.ID{}); c != 401 {
		t.Fatalf("no identity: %d", c)
	}
	if c := do("PUT", "/v1/cache/k", "entry", app); c != 403 {
		t.Fatalf("the app wrote to the cache: %d", c)
	}
	if c := do("GET", "/v1/cache/k", "", proxy); c != 200 {
		t.Fatalf("the proxy read the cache: %d", c)
	}
}
