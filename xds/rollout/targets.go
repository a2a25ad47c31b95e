package rollout

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
)

// Targets finds the sidecars of a version, whatever kind it is: static
// endpoints as listed, a Service's ready EndpointSlice endpoints as the
// control plane discovered them for the served configuration, a DNS name
// resolved now to every address (as Envoy's STRICT_DNS cluster does).
// Each is scraped at /metrics on the sidecar's HTTP port.
type Targets struct {
	Config     func() *config.Config
	Discovered func() compile.Discovered
	Resolver   interface {
		LookupHost(ctx context.Context, host string) ([]string, error)
	}
}

// Endpoints are a version's host:port endpoints and a description of
// where they came from.
func (t Targets) Endpoints(ctx context.Context, model, version string) ([]string, string, error) {
	c := t.Config()
	if c == nil {
		return nil, "", fmt.Errorf("nothing published yet")
	}
	for _, m := range c.Models {
		if m.Name != model {
			continue
		}
		for _, v := range m.Versions {
			if v.Name != version {
				continue
			}
			switch {
			case v.Service != nil:
				ref := *v.Service
				var found compile.Discovered
				if t.Discovered != nil {
					found = t.Discovered()
				}
				eps, ok := found[ref]
				if !ok {
					return nil, "", fmt.Errorf("version %s: service %s/%s is not discovered (serve -kube)", version, ref.Namespace, ref.Name)
				}
				return eps, fmt.Sprintf("%d ready endpoints of service %s/%s", len(eps), ref.Namespace, ref.Name), nil
			case v.DNS != "":
				host, port, err := net.SplitHostPort(v.DNS)
				if err != nil {
					return nil, "", fmt.Errorf("version %s: dns %q: %w", version, v.DNS, err)
				}
				addrs, err := t.Resolver.LookupHost(ctx, host)
				if err != nil {
					return nil, "", fmt.Errorf("version %s: %w", version, err)
				}
				eps := make([]string, len(addrs))
				for i, a := range addrs {
					eps[i] = net.JoinHostPort(a, port)
				}
				return eps, fmt.Sprintf("%d addresses of %s", len(eps), v.DNS), nil
			default:
				return v.Endpoints, fmt.Sprintf("%d static endpoints", len(v.Endpoints)), nil
			}
		}
	}
	return nil, "", fmt.Errorf("model %s has no version %s", model, version)
}

// Sample scrapes every endpoint of the version.
func (t Targets) Sample(ctx context.Context, c *http.Client, model, version string) (Sample, error) {
	eps, src, err := t.Endpoints(ctx, model, version)
	if err != nil {
		return Sample{}, err
	}
	s, err := Scrape(ctx, c, MetricsURLs(eps))
	s.Source = "scrape " + src
	if len(eps) > 0 {
		s.Source += " (" + strconv.Itoa(s.Ready) + " answered)"
	}
	return s, err
}

// MetricsURLs are the /metrics URLs of host:port endpoints.
func MetricsURLs(endpoints []string) []string {
	out := make([]string, len(endpoints))
	for i, e := range endpoints {
		out[i] = "http://" + strings.TrimPrefix(e, "http://") + "/metrics"
	}
	return out
}
