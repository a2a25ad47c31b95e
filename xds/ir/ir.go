// Package ir is the control plane's intermediate model, between compile and
// envoygen on the config path: what to route where, with every default
// filled in and every name derived. It imports nothing of this module.
package ir

import (
	"errors"
	"fmt"
	"time"
)

// Config is the whole routing model.
type Config struct {
	HTTP   *Listener
	GRPC   []string // api_listener names, sorted
	Models []Model  // sorted by name
	Filter *Wasm    // in the HTTP listener's chain
	TLS    *TLS     // upstream mTLS of the HTTP (Envoy) clusters
}

// Wasm is the filter's module and plugin configuration.
type Wasm struct {
	File string
	// URL with SHA256 is fetched by Envoy through a cluster for its host.
	URL, SHA256 string
	URLHost     string
	URLPort     uint32
	URLTLS      bool
	Config      string // JSON
	FailOpen    bool
	// CacheCluster is where the filter's remote cache calls go (nil: none).
	CacheCluster *Cluster
}

// TLS is mTLS with SVIDs from the SPIRE agent's SDS.
type TLS struct {
	SDSSocket   string
	SVID        string
	TrustDomain string
	SidecarIDs  []string // empty: any ID of the trust domain
}

// Listener is an Envoy HTTP listener.
type Listener struct {
	Name    string
	Address string
	Port    uint32
}

// Model is a model name and the split between its versions.
type Model struct {
	Name     string
	Timeout  time.Duration
	Retry    *Retry
	LB       LB
	Outlier  *Outlier
	Health   *Health
	Limits   *Limits
	Versions []Version // sorted by name
}

// Version is one deployment in the split.
type Version struct {
	Name   string
	Weight uint32
	HTTP   Cluster
	GRPC   *Cluster // nil: no gRPC port
	Fault  *Fault   // nil: none
}

// Fault is injected into a version's requests; a zero percent is off.
type Fault struct {
	Delay        time.Duration
	DelayPercent float64
	HTTPStatus   uint32
	GRPCStatus   uint32
	AbortPercent float64
}

// Cluster is where a version's sidecars are.
type Cluster struct {
	Name      string
	Endpoints []Endpoint // static
	DNS       string     // resolved by Envoy, with DNSPort
	DNSPort   uint32
	// Discovered endpoints may be none (a Service with no ready pods).
	Discovered bool
}

// Endpoint is one sidecar.
type Endpoint struct {
	Host string
	Port uint32
}

// Retry policy.
type Retry struct {
	Attempts      uint32
	On            []string // Envoy retry_on conditions
	On429         bool
	PerTryTimeout time.Duration
	BudgetPercent float64
}

// LBPolicy names.
const (
	LeastRequest       = "least_request"
	RoundRobin         = "round_robin"
	WeightedRoundRobin = "weighted_round_robin"
	RingHash           = "ring_hash"
)

// LB is the load-balancing policy.
type LB struct {
	Policy     string
	HashHeader string
	// BlackoutPeriod and WeightUpdatePeriod tune weighted round robin
	// (0: the defaults, 10 s and 1 s).
	BlackoutPeriod, WeightUpdatePeriod time.Duration
	// SlowStartWindow ramps new endpoints up (Envoy only; 0: off).
	SlowStartWindow time.Duration
}

// Outlier detection.
type Outlier struct {
	// FailurePercentage ejects a host whose share of failed requests in
	// an interval reaches it, once it served RequestVolume.
	FailurePercentage, RequestVolume uint32
	Consecutive5xx                   uint32
	Interval                         time.Duration
	BaseEjectionTime                 time.Duration
	MaxEjectionPercent               uint32
}

// Health is an active HTTP health check.
type Health struct {
	Path                                 string
	Interval, Timeout                    time.Duration
	UnhealthyThreshold, HealthyThreshold uint32
}

// Limits are circuit breakers.
type Limits struct {
	MaxConnections, MaxPendingRequests, MaxRequests, MaxRetries uint32
}

// Validate checks the invariants envoygen relies on.
func (c *Config) Validate() error {
	var errs []error
	clusters := map[string]bool{}
	for i, m := range c.Models {
		if i > 0 && c.Models[i-1].Name >= m.Name {
			errs = append(errs, fmt.Errorf("models not sorted and unique at %q", m.Name))
		}
		var total uint32
		for _, v := range m.Versions {
			total += v.Weight
			for _, cl := range []*Cluster{&v.HTTP, v.GRPC} {
				if cl == nil {
					continue
				}
				if clusters[cl.Name] {
					errs = append(errs, fmt.Errorf("cluster name %q used twice", cl.Name))
				}
				clusters[cl.Name] = true
				if (len(cl.Endpoints) > 0 || cl.Discovered) == (cl.DNS != "") {
					errs = append(errs, fmt.Errorf("cluster %q: exactly one of endpoints and dns", cl.Name))
				}
			}
		}
		if total == 0 {
			errs = append(errs, fmt.Errorf("model %q: weights sum to 0", m.Name))
		}
	}
	return errors.Join(errs...)
}
