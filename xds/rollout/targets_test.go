package rollout

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
)

type resolver map[string][]string

func (r resolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("lookup %s: no such host", host)
}

// TestTargets: every kind of version yields the endpoints to scrape —
// static as listed, a Service's as discovered, a DNS name's addresses.
func TestTargets(t *testing.T) {
	c, err := config.Parse([]byte(`apiVersion: autoglm.io/v1alpha1
listeners: {grpc: [g]}
models:
  - name: m
    versions:
      - {name: static, weight: 40, endpoints: ["10.0.0.1:8080", "10.0.0.2:8080"], grpc_port: 9090}
      - {name: svc, weight: 30, service: {namespace: ns, name: m-svc, port: 8080}, grpc_port: 9090}
      - {name: dns, weight: 30, dns: "m-dns.example:8081", grpc_port: 9090}
`))
	if err != nil {
		t.Fatal(err)
	}
	tg := Targets{
		Config: func() *config.Config { return c },
		Discovered: func() compile.Discovered {
			return compile.Discovered{{Namespace: "ns", Name: "m-svc", Port: 8080}: {"10.1.0.7:8080"}}
		},
		Resolver: resolver{"m-dns.example": {"10.2.0.1", "fd00::1"}},
	}
	for _, tc := range []struct {
		version string
		want    []string
	}{
		{"static", []string{"10.0.0.1:8080", "10.0.0.2:8080"}},
		{"svc", []string{"10.1.0.7:8080"}},
		{"dns", []string{"10.2.0.1:8081", "[fd00::1]:8081"}},
	} {
		got, src, err := tg.Endpoints(context.Background(), "m", tc.version)
		if err != nil || !reflect.DeepEqual(got, tc.want) || src == "" {
			t.Errorf("%s: %v %q %v, want %v", tc.version, got, src, err, tc.want)
		}
	}
	if _, _, err := tg.Endpoints(context.Background(), "m", "nope"); err == nil {
		t.Error("an unknown version has endpoints")
	}
	tg.Resolver = resolver{}
	if _, _, err := tg.Endpoints(context.Background(), "m", "dns"); err == nil {
		t.Error("an unresolvable name has endpoints")
	}
	if got := MetricsURLs([]string{"[fd00::1]:8081"}); got[0] != "http://[fd00::1]:8081/metrics" {
		t.Errorf("%v", got)
	}
}
