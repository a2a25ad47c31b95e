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
	"maps"
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
	// versions' weights a rollout has taken over, by model; found the
	// endpoints discovered for it. All three are written only by the
	// publisher goroutine (and replaced, never changed in place).
	last    *config.Config
	weights map[string]map[string]int
	found   compile.Discovered
	// changed is closed and replaced at every status change (Wait).
	changed chan struct{}
	start   sync.Once
	inputs  chan input
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
	return &Server{cache: cache.NewSnapshotCache(false, allNodes{}, nil), log: log, nacks: map[string]*Nack{}, NackBackoff: 250 * time.Millisecond, changed: make(chan struct{})}
}

// The configuration that Envoy gets is composed of three inputs — the
// configuration file, the endpoints discovery finds, and the weights a
// rollout holds — and published by one goroutine that owns it, as in
// Contour's and Envoy Gateway's runners: the file watcher, discovery and
// the rollout send it inputs, and it applies them in the order they arrive
// and publishes the composition. Two publications can then never race (a
// re-publish that began before a file edit cannot put the old file back
// after it). The goroutine starts with the first input and lives as long as
// the Server.

// input is one change sent to the publisher, answered on done with the
// outcome of the publication that included it.
type input struct {
	config    *config.Config // a new configuration (nil: keep)
	model     string         // with weights: a rollout's weights for model
	weights   map[string]int
	republish bool // discovered endpoints may have changed
	done      chan error
}

func (s *Server) send(in input) error {
	s.start.Do(func() {
		s.inputs = make(chan input, 64)
		go s.publisher()
	})
	in.done = make(chan error, 1)
	s.inputs <- in
	return <-in.done
}

// Publish makes c the configuration and publishes it (with the weights a
// rollout holds and the discovered endpoints). On failure the served
// snapshot stays and the error is recorded and returned.
func (s *Server) Publish(c *config.Config) error { return s.send(input{config: c}) }

// SetWeights makes the weights of a model's versions those given, in the
// served configuration and every later one (a rollout owns them), and
// republishes. Weights that cannot be published are dropped again.
func (s *Server) SetWeights(model string, weights map[string]int) error {
	return s.send(input{model: model, weights: maps.Clone(weights)})
}

// Republish composes and publishes again, e.g. after discovered endpoints
// changed; an unchanged result is not pushed.
func (s *Server) Republish() error { return s.send(input{republish: true}) }

// SetDiscovery makes every publication use the endpoints d finds for the
// configuration's Services. Call before the first Publish.
func (s *Server) SetDiscovery(d func(*config.Config) compile.Discovered) { s.discover = d }

// Config is the last good configuration as given (nil before the first).
func (s *Server) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Weights are the weights a rollout set for model's versions in the served
// configuration (nil when it set none).
func (s *Server) Weights(model string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.weights[model])
}

// Discovered are the endpoints the last publication found for the
// configuration's Services (nil without discovery).
func (s *Server) Discovered() compile.Discovered {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.found
}

// Wait blocks until cond holds for the status (checked now and after every
// change of it), or ctx ends.
func (s *Server) Wait(ctx context.Context, cond func(Status) bool) error {
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if cond(s.Status()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// notify wakes the Waits; s.mu is held.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// publisher owns publication: it takes the inputs that are waiting,
// applies them in order and publishes once for all of them.
func (s *Server) publisher() {
	for in := range s.inputs {
		batch := []input{in}
	more:
		for {
			select {
			case in := <-s.inputs:
				batch = append(batch, in)
			default:
				break more
			}
		}
		s.handle(batch)
	}
}

// handle applies a batch of inputs and publishes. A configuration that
// fails is answered with its error and dropped (the last good one stays
// the base); weights that fail are dropped again.
func (s *Server) handle(batch []input) {
	s.mu.Lock()
	base, weights := s.last, s.weights
	s.mu.Unlock()
	var answered []input
	candidate := base
	for _, in := range batch {
		switch {
		case in.config != nil:
			if err := s.check(in.config); err != nil {
				s.Reject(err)
				in.done <- err
				continue
			}
			candidate = in.config
		case in.weights != nil:
			weights = maps.Clone(weights)
			if weights == nil {
				weights = map[string]map[string]int{}
			}
			weights[in.model] = in.weights
		}
		answered = append(answered, in)
	}
	if len(answered) == 0 {
		return
	}
	var err error
	if candidate == nil {
		err = errors.New("nothing published yet")
	} else {
		err = s.publish(candidate, weights)
	}
	if err != nil {
		s.Reject(err)
	}
	for _, in := range answered {
		in.done <- err
	}
}

// check validates a given configuration.
func (s *Server) check(c *config.Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if s.Check != nil {
		return s.Check(c)
	}
	return nil
}

// withWeights is c with the overridden weights (c itself is not changed).
func withWeights(c *config.Config, weights map[string]map[string]int) (*config.Config, error) {
	if len(weights) == 0 {
		return c, nil
	}
	out := *c
	out.Models = append([]config.Model(nil), c.Models...)
	for i := range out.Models {
		m := &out.Models[i]
		w, ok := weights[m.Name]
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

// publish composes given, weights and the discovered endpoints, and sets
// the snapshot; only the publisher goroutine calls it.
func (s *Server) publish(given *config.Config, weights map[string]map[string]int) error {
	c, err := withWeights(given, weights)
	if err != nil {
		return err
	}
	var found compile.Discovered
	if d := s.discover; d != nil {
		found = d(c)
	}
	res, err := envoygen.Generate(compile.Compile(c, found))
	if err != nil {
		return err
	}
	snap, err := snapshot.Build(res)
	if err != nil {
		return err
	}
	version := snap.GetVersion(typeListener)
	s.mu.Lock()
	same := version == s.status.Version
	s.mu.Unlock()
	if !same {
		if err := s.cache.SetSnapshot(context.Background(), "autoglm", snap); err != nil {
			return err
		}
	}
	s.mu.Lock()
	if !same {
		s.status.Version, s.status.Published = version, time.Now()
	}
	s.status.LastError = ""
	s.last, s.weights, s.found = given, weights, found
	s.notify()
	s.mu.Unlock()
	if !same {
		s.log.Info("published", "version", version, "models", len(c.Models))
	}
	return nil
}

const typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"

// Reject records a configuration that could not be published.
func (s *Server) Reject(err error) {
	s.mu.Lock()
	s.status.LastError = err.Error()
	version := s.status.Version
	s.notify()
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
