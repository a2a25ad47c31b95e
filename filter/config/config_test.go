package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseFull(t *testing.T) {
	c, err := Parse([]byte(`{
		"paths": ["/v1/chat/completions"],
		"max_body_bytes": 65536,
		"tenant": {"sources": ["peer_certificate", "api_key"], "api_key_header": "x-api-key", "anonymous": ""},
		"cache": {"enabled": true, "ttl": "2m", "max_bytes": 1048576, "max_entry_bytes": 65536,
		          "remote": {"cluster": "outbound|8080||autoglm-cache", "authority": "cache", "timeout": "20ms"}},
		"throttle": {"enabled": true, "requests_per_second": 5, "tokens_per_minute": 6000, "priority_reserve": 0.2,
		             "tenants": {"spiffe://mesh/ns/a/sa/b": {"tokens_per_minute": 100}},
		             "global": {"cluster": "outbound|8080||ratelimit", "authority": "ratelimit", "timeout": "30ms", "per_model": true}}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxBodyBytes != 65536 || c.Tenant.APIKeyHeader != "x-api-key" || c.Tenant.Anonymous != "" || c.Cache.TTL != 2*time.Minute ||
		c.Cache.Remote.Timeout != 20*time.Millisecond || c.Throttle.For("spiffe://mesh/ns/a/sa/b").TokensPerMinute != 100 ||
		c.Throttle.For("spiffe://mesh/ns/a/sa/b").RequestsPerSecond != 5 || c.Throttle.For("other").TokensPerMinute != 6000 {
		t.Fatalf("%+v", c)
	}
	if g := c.Throttle.Global; g.Cluster != "outbound|8080||ratelimit" || g.Domain != "autoglm" || g.Path != "/json" || g.Timeout != 30*time.Millisecond || !g.PerModel {
		t.Fatalf("global %+v", g)
	}
	if r, tok := c.Throttle.For("x").Burst(); r != 5 || tok != 6000 {
		t.Fatalf("burst %v %v", r, tok)
	}
}

func TestParseDefaults(t *testing.T) {
	for _, in := range []string{"", "  ", "{}"} {
		c, err := Parse([]byte(in))
		if err != nil || c.MaxBodyBytes != 1<<20 || len(c.Paths) != 2 || c.Cache.Enabled || c.Throttle.Enabled || c.Mode != ModeIstio {
			t.Fatalf("%q: %+v %v", in, c, err)
		}
	}
}

func TestParseErrorsNamePaths(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`[]`, "(root): must be a JSON object"},
		{`{"cache": {"ttl": 5}}`, `cache.ttl: must be a duration string`},
		{`{"cache": {"enabled": true, "ttl": "soon"}}`, `cache.ttl: must be a duration such as`},
		{`{"cache": {"enabled": true, "max_bytes": 10, "max_entry_bytes": 100}}`, "cache.max_bytes: must be at least cache.max_entry_bytes"},
		{`{"throttle": {"requests_per_second": -1}}`, "throttle.requests_per_second: must not be negative"},
		{`{"throttle": {"tenants": {"spiffe://a.b/c": {"token_burst": -2}}}}`, `throttle.tenants.["spiffe://a.b/c"].token_burst: must not be negative`},
		{`{"throttle": {"tenants": {"t": {"bogus": 1}}}}`, "throttle.tenants.t.bogus: unknown field"},
		{`{"tenant": {"sources": ["api_key"]}}`, "tenant.api_key_header: is required"},
		{`{"tenant": {"sources": ["magic"]}}`, "tenant.sources[0]: must be peer_certificate, xfcc or api_key"},
		{`{"max_body_bytes": 1.5}`, "max_body_bytes: must be an integer"},
		{`{"paths": ["v1"]}`, "paths[0]: must start with /"},
		{`{"throttle": {"priority_reserve": 0.9}}`, "throttle.priority_reserve: must be in [0, 0.5)"},
		{`{"bogus": true, "cache": {"nope": 1}}`, "bogus: unknown field; cache.nope: unknown field"},
		{`{"throttle": {"global": {"cluster": "rl", "timeout": "2m"}}}`, "throttle.global.timeout: must be 1ms..1m"},
		{`{"throttle": {"global": {"cluster": "rl", "path": "json", "domain": ""}}}`, `throttle.global.domain: must not be empty; throttle.global.path: must start with /`},
		{`{"throttle": {"global": {"clusters": "rl"}}}`, "throttle.global.clusters: unknown field"},
		{`{"mode": "envoy"}`, `mode: must be istio or standalone, got "envoy"`},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestParseMode(t *testing.T) {
	c, err := Parse([]byte(`{"mode": "standalone"}`))
	if err != nil || c.Mode != ModeStandalone {
		t.Fatalf("%+v %v", c, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"cache": {"enabled": true}, "throttle": {"enabled": true, "requests_per_second": 1}}`))
	f.Add([]byte(`{"tenant": {"sources": ["xfcc"]}, "paths": ["/x"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil && (c.MaxBodyBytes < 1024 || len(c.Paths) == 0 || c.Throttle.MaxCASRetries < 1 ||
			(c.Mode != ModeIstio && c.Mode != ModeStandalone)) {
			t.Fatalf("accepted an invalid configuration: %+v", c)
		}
	})
}
