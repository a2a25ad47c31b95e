// Package compile turns a validated configuration into the intermediate
// model: defaults filled in, policies merged, names derived, everything
// sorted. It is a pure function: same input, same output.
package compile

import (
	"cmp"
	"encoding/json"
	"net"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/ir"
)

// DefaultTimeout suits generation, which outlasts Envoy's 15 s default.
const DefaultTimeout = 300 * time.Second

// ClusterName is the cluster of a model version ("-grpc" appended for the
// gRPC port's): config.ClusterName, whose collisions Validate refuses.
func ClusterName(model, version string) string { return config.ClusterName(model, version) }

// Discovered are the endpoints (host:port of the sidecars' HTTP API) found
// for the Services that versions name.
type Discovered map[config.ServiceRef][]string

// Compile builds the ir of c, which must have passed Validate, with the
// endpoints discovered for its Services (nil: none yet).
func Compile(c *config.Config, found Discovered) *ir.Config {
	out := &ir.Config{GRPC: append([]string(nil), c.Listeners.GRPC...)}
	sort.Strings(out.GRPC)
	if h := c.Listeners.HTTP; h != nil {
		out.HTTP = &ir.Listener{Name: h.Name, Address: h.Address, Port: uint32(h.Port)}
	}
	if f := c.Filter; f != nil {
		w := &ir.Wasm{File: f.Wasm.File, URL: f.Wasm.URL, SHA256: f.Wasm.SHA256, FailOpen: f.FailOpen}
		// The routes match the model header: the filter runs in its
		// standalone mode, which holds the headers until it has read the
		// body (envoygen sets allow_on_headers_stop_iteration for it).
		plugin := map[string]any{"mode": "standalone"}
		for k, v := range f.Config {
			plugin[k] = v
		}
		b, _ := json.Marshal(plugin) // validated
		w.Config = string(b)
		if u, err := url.Parse(f.Wasm.URL); err == nil && f.Wasm.URL != "" {
			w.URLHost, w.URLTLS = u.Hostname(), u.Scheme == "https"
			w.URLPort = 80
			if w.URLTLS {
				w.URLPort = 443
			}
			if p := u.Port(); p != "" {
				w.URLPort = atou(p)
			}
		}
		if cc := f.CacheCluster; cc != nil {
			c := cluster(cc.Name, config.Version{Endpoints: cc.Endpoints, DNS: cc.DNS}, 0)
			w.CacheCluster = &c
		}
		out.Filter = w
	}
	if t := c.UpstreamTLS; t != nil {
		out.TLS = &ir.TLS{SDSSocket: t.SDSSocket, SVID: t.SVID, TrustDomain: t.TrustDomain, SidecarIDs: append([]string(nil), t.SidecarIDs...)}
		sort.Strings(out.TLS.SidecarIDs)
	}
	for _, m := range c.Models {
		p := merge(c.Defaults, m.Policy)
		im := ir.Model{Name: m.Name, Timeout: DefaultTimeout, LB: ir.LB{Policy: ir.LeastRequest}}
		if p.Timeout != nil {
			im.Timeout = *p.Timeout
		}
		if r := p.Retries; r != nil && r.Attempts > 0 {
			rr := &ir.Retry{Attempts: uint32(r.Attempts), PerTryTimeout: r.PerTryTimeout, BudgetPercent: r.BudgetPercent}
			for _, on := range r.On {
				if on == "429" {
					rr.On429 = true
				} else {
					rr.On = append(rr.On, on)
				}
			}
			sort.Strings(rr.On)
			im.Retry = rr
		}
		if l := p.LB; l != nil {
			im.LB = ir.LB{Policy: l.Policy, HashHeader: l.HashHeader, BlackoutPeriod: l.BlackoutPeriod, WeightUpdatePeriod: l.WeightUpdatePeriod, SlowStartWindow: l.SlowStartWindow}
		}
		if o := p.Outlier; o != nil {
			im.Outlier = &ir.Outlier{Consecutive5xx: uint32(o.Consecutive5xx), Interval: o.Interval, BaseEjectionTime: o.BaseEjectionTime, MaxEjectionPercent: uint32(o.MaxEjectionPercent),
				FailurePercentage: uint32(cmp.Or(o.FailurePercentage, 50)), RequestVolume: uint32(cmp.Or(o.RequestVolume, 10))}
		}
		if h := p.Health; h != nil {
			im.Health = &ir.Health{Path: h.Path, Interval: h.Interval, Timeout: h.Timeout, UnhealthyThreshold: uint32(h.UnhealthyThreshold), HealthyThreshold: uint32(h.HealthyThreshold)}
		}
		if l := p.Limits; l != nil {
			im.Limits = &ir.Limits{MaxConnections: uint32(l.MaxConnections), MaxPendingRequests: uint32(l.MaxPendingRequests), MaxRequests: uint32(l.MaxRequests), MaxRetries: uint32(l.MaxRetries)}
		}
		for _, v := range m.Versions {
			name := ClusterName(m.Name, v.Name)
			if v.Service != nil {
				v.Endpoints = found[*v.Service]
			}
			iv := ir.Version{Name: v.Name, Weight: uint32(v.Weight), HTTP: cluster(name, v, 0), Fault: fault(v.Faults)}
			if v.GRPCPort > 0 {
				g := cluster(name+"-grpc", v, uint32(v.GRPCPort))
				iv.GRPC = &g
			}
			im.Versions = append(im.Versions, iv)
		}
		sort.Slice(im.Versions, func(i, j int) bool { return im.Versions[i].Name < im.Versions[j].Name })
		out.Models = append(out.Models, im)
	}
	sort.Slice(out.Models, func(i, j int) bool { return out.Models[i].Name < out.Models[j].Name })
	return out
}

// cluster places a version's endpoints, on port when it is not 0.
func cluster(name string, v config.Version, port uint32) ir.Cluster {
	c := ir.Cluster{Name: name, Discovered: v.Service != nil}
	if v.DNS != "" {
		host, p, _ := net.SplitHostPort(v.DNS)
		c.DNS, c.DNSPort = host, atou(p)
		if port != 0 {
			c.DNSPort = port
		}
		return c
	}
	for _, e := range v.Endpoints {
		host, p, _ := net.SplitHostPort(e)
		ep := ir.Endpoint{Host: host, Port: atou(p)}
		if port != 0 {
			ep.Port = port
		}
		c.Endpoints = append(c.Endpoints, ep)
	}
	sort.Slice(c.Endpoints, func(i, j int) bool {
		a, b := c.Endpoints[i], c.Endpoints[j]
		return a.Host < b.Host || (a.Host == b.Host && a.Port < b.Port)
	})
	return c
}

func atou(s string) uint32 {
	n, _ := strconv.Atoi(s)
	return uint32(n)
}

// merge overrides the defaults with the model's settings, field by field.
func merge(d, m config.Policy) config.Policy {
	out := d
	if m.Timeout != nil {
		out.Timeout = m.Timeout
	}
	if m.Retries != nil {
		out.Retries = m.Retries
	}
	if m.Outlier != nil {
		out.Outlier = m.Outlier
	}
	if m.Health != nil {
		out.Health = m.Health
	}
	if m.Limits != nil {
		out.Limits = m.Limits
	}
	if m.LB != nil {
		out.LB = m.LB
	}
	return out
}

// fault is a version's faults in the ir.
func fault(f *config.Faults) *ir.Fault {
	if f == nil {
		return nil
	}
	out := &ir.Fault{}
	if d := f.Delay; d != nil {
		out.Delay, out.DelayPercent = d.Fixed, d.Percent
	}
	if a := f.Abort; a != nil {
		out.HTTPStatus, out.AbortPercent = uint32(a.HTTPStatus), a.Percent
		switch {
		case a.GRPCStatus != nil:
			out.GRPCStatus = uint32(*a.GRPCStatus)
		case a.HTTPStatus == 429:
			out.GRPCStatus = 8 // RESOURCE_EXHAUSTED, as the sidecar answers
		case a.HTTPStatus == 500:
			out.GRPCStatus = 13 // INTERNAL
		case a.HTTPStatus == 502 || a.HTTPStatus == 503 || a.HTTPStatus == 504:
			out.GRPCStatus = 14 // UNAVAILABLE
		default:
			out.GRPCStatus = 2 // UNKNOWN
		}
	}
	return out
}
