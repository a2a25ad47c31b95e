// Package server is the control plane's serving end: it publishes each
// good configuration as a snapshot on go-control-plane's ADS server
// (state-of-the-world and delta), keeps serving the last good one when a
// new configuration fails, tracks NACKs per node without resending in a
// loop, and reports its state on an HTTP status endpoint.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	xds "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/open-autoglm/autoglm/xds/compile"
	"github.com/open-autoglm/autoglm/xds/config"
	"github.com/open-autoglm/autoglm/xds/envoygen"
	"github.com/open-autoglm/autoglm/xds/snapshot"
)

// allNodes gives every node the same snapshot.
type allNodes struct{}

func (allNodes) ID(*core.Node) string { return "autoglm" }

// Nack is the last rejection a node sent for a resource type.
type Nack struct {
	Node    string    `json:"node"`
	TypeURL string    `json:"type_url"`
	Version string    `json:"version"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
	Count   int       `json:"count"`
}

// Status is what the status endpoint reports.
type Status struct {
	Version   string    `json:"version"`
	Published time.Time `json:"published"`
	// LastError is why the latest configuration was not published; the
	// previous version stays served.
	LastError string `json:"last_error,omitempty"`
	Nacks     []Nack `json:"nacks,omitempty"`
}

// Server publishes configurations over ADS.
type Server struct {
	// GRPCOptions are added to the ADS server's (transport credentials:
	// mTLS with SVIDs, authorizing nodes by SPIFFE ID). Set before Run.
	GRPCOptions []grpc.ServerOption

	cache cache.SnapshotCache
	log   *slog.Logger

	mu     sync.Mutex
	status Status
	nacks  map[string]*Nack // node|type
	// last is the last good configuration as given; weights holds the
	// versions' weights a rollout has taken over, by model.
	last    *config.Config
	weights map[string]map[string]int
	// discover finds the endpoints of the Services a configuration names.
	discover func(*config.Config) compile.Discovered
	// NackBackoff is the base delay before a stream that NACKed gets an
	// answer again; it doubles per repeated NACK, up to a minute.
	NackBackoff time.Duration
	// Check, when set, runs on every configuration before it is
	// published (e.g. config.Resolve); an error rejects it.
	Check func(*config.Config) error
	// Pushed, when set before Run, is called after every response sent
	// to a node.
	Pushed func(node, typeURL, version string)
}

// New returns a server with nothing published.
func New(log *slog.Logger) *Server {
	return &Server{cache: cache.NewSnapshotCache(false, allNodes{}, nil), log: log, nacks: map[string]*Nack{}, NackBackoff: 250 * time.Millisecond}
}

// SetWeights makes the weights of a model's versions those given, in the
// served configuration and every later one (a rollout owns them), and
// republishes.
func (s *Server) SetWeights(model string, weights map[string]int) error {
	s.mu.Lock()
	if s.weights == nil {
		s.weights = map[string]map[string]int{}
	}
	s.weights[model] = weights
	last := s.last
	s.mu.Unlock()
	if last == nil {
		return errors.New("nothing published yet")
	}
	return s.Publish(last)
}

// SetDiscovery makes every publication use the endpoints d finds for the
// configuration's Services. Call before the first Publish.
func (s *Server) SetDiscovery(d func(*config.Config) compile.Discovered) { s.discover = d }

// Republish publishes the last good configuration again, e.g. after
// discovered endpoints changed; an unchanged result is not pushed.
func (s *Server) Republish() error {
	last := s.Config()
	if last == nil {
		return nil
	}
	return s.Publish(last)
}

// Config is the last good configuration as given (nil before the first).
func (s *Server) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// withWeights is c with the overridden weights (c itself is not changed).
func (s *Server) withWeights(c *config.Config) (*config.Config, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.weights) == 0 {
		return c, nil
	}
	out := *c
	out.Models = append([]config.Model(nil), c.Models...)
	for i := range out.Models {
		m := &out.Models[i]
		w, ok := s.weights[m.Name]
		if !ok {
			continue
		}
		m.Versions = append([]config.Version(nil), m.Versions...)
		for j := range m.Versions {
			if v, ok := w[m.Versions[j].Name]; ok {
				m.Versions[j].Weight = v
			}
		}
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("with the rollout's weights: %w", err)
	}
	return &out, nil
}

// Publish compiles, generates, validates and publishes c (with the weights
// a rollout holds). On failure the served snapshot stays and the error is
// recorded and returned.
func (s *Server) Publish(given *config.Config) error {
	if err := given.Validate(); err != nil {
		s.Reject(err)
		return err
	}
	if s.Check != nil {
		if err := s.Check(given); err != nil {
			s.Reject(err)
			return err
		}
	}
	c, err := s.withWeights(given)
	if err != nil {
		s.Reject(err)
		return err
	}
	var found compile.Discovered
	if d := s.discover; d != nil {
		found = d(c)
	}
	res, err := envoygen.Generate(compile.Compile(c, found))
	if err == nil {
		var snap *cache.Snapshot
		if snap, err = snapshot.Build(res); err == nil {
			s.mu.Lock()
			same := snap.GetVersion(typeListener) == s.status.Version
			s.mu.Unlock()
			if !same {
				err = s.cache.SetSnapshot(context.Background(), "autoglm", snap)
			}
			if err == nil {
				s.mu.Lock()
				if !same {
					s.status.Version, s.status.Published = snap.GetVersion(typeListener), time.Now()
				}
				s.status.LastError = ""
				s.last = given
				s.mu.Unlock()
				if !same {
					s.log.Info("published", "version", snap.GetVersion(typeListener), "models", len(c.Models))
				}
				return nil
			}
		}
	}
	s.Reject(err)
	return err
}

const typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"

// Reject records a configuration that could not be published.
func (s *Server) Reject(err error) {
	s.mu.Lock()
	s.status.LastError = err.Error()
	version := s.status.Version
	s.mu.Unlock()
	s.log.Error("configuration rejected; serving the last good version", "version", version, "err", err)
}

// Status is the current state.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	for _, n := range s.nacks {
		st.Nacks = append(st.Nacks, *n)
	}
	return st
}

// StatusHandler serves Status as JSON; 503 while nothing is published.
func (s *Server) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := s.Status()
		w.Header().Set("Content-Type", "application/json")
		if st.Version == "" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(st)
	})
}

// callbacks track NACKs. A NACK makes the stream wait before its next
// answer (doubling per repeat): the cache would otherwise resend the same
// snapshot at once, and the node NACK it again, in a loop.
type callbacks struct {
	xds.CallbackFuncs
	s *Server
}

func (s *Server) callbacks() xds.Callbacks {
	cb := &callbacks{s: s}
	var mu sync.Mutex
	streak := map[int64]int{}
	cb.StreamRequestFunc = func(id int64, req *discovery.DiscoveryRequest) error {
		mu.Lock()
		defer mu.Unlock()
		if req.ErrorDetail == nil {
			delete(streak, id)
			return nil
		}
		streak[id]++
		n := s.recordNack(req.GetNode().GetId(), req.TypeUrl, req.VersionInfo, req.ErrorDetail.GetMessage())
		wait := min(s.NackBackoff<<min(streak[id]-1, 8), time.Minute)
		if n == 1 || n%100 == 0 {
			s.log.Warn("NACK", "node", req.GetNode().GetId(), "type", req.TypeUrl, "version", req.VersionInfo, "err", req.ErrorDetail.GetMessage(), "count", n, "backoff", wait)
		}
		mu.Unlock()
		time.Sleep(wait)
		mu.Lock()
		return nil
	}
	cb.StreamResponseFunc = func(_ context.Context, _ int64, req *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
		if s.Pushed != nil {
			s.Pushed(req.GetNode().GetId(), resp.TypeUrl, resp.VersionInfo)
		}
	}
	cb.StreamClosedFunc = func(id int64, _ *core.Node) {
		mu.Lock()
		delete(streak, id)
		mu.Unlock()
	}
	return cb
}

func (s *Server) recordNack(node, typeURL, version, msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := node + "|" + typeURL
	n := s.nacks[k]
	if n == nil {
		n = &Nack{Node: node, TypeURL: typeURL}
		s.nacks[k] = n
	}
	n.Version, n.Message, n.At = version, msg, time.Now()
	n.Count++
	return n.Count
}

// Run serves ADS on l until ctx ends, then stops gracefully.
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}, s.GRPCOptions...)...)
	srv := xds.NewServer(ctx, s.cache, s.callbacks())
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	done := make(chan struct{})
	go func() {
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second): // xDS streams never end by themselves
			gs.Stop()
		}
		close(done)
	}()
	err := gs.Serve(l)
	<-done
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}
