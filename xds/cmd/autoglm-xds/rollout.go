package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/open-autoglm/autoglm/internal/strictyaml"
	k8s "github.com/open-autoglm/autoglm/xds/kube"
	"github.com/open-autoglm/autoglm/xds/rollout"
	"github.com/open-autoglm/autoglm/xds/server"
)

// loadPlan reads a rollout plan (YAML, strict).
func loadPlan(path string) (rollout.Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return rollout.Plan{}, err
	}
	return loadPlanText(string(data))
}

func loadPlanText(text string) (rollout.Plan, error) {
	var p rollout.Plan
	err := strictyaml.Decode([]byte(text), &p)
	if err == nil {
		err = p.Validate()
	}
	return p, err
}

// runner runs a plan on one autoglm-xds replica of several. With a lease
// only the replica that holds it runs the plan; with a state ConfigMap
// the leader saves the plan's step, state and weight there, every replica
// serves the weight saved (xDS mode; in Istio mode the VirtualService
// carries the weights), and a new leader resumes from it.
type runner struct {
	s     *server.Server
	plan  rollout.Plan
	istio func(int) error   // Istio mode: write the weights there
	state *k8s.RolloutState // nil: the state lives in this process only
	lease *lease            // nil: no election; this replica runs the plan
	log   *slog.Logger
	// sample overrides the scrape of the versions' sidecars (tests).
	sample func(context.Context, string) (rollout.Sample, error)

	mu     sync.Mutex
	ro     *rollout.Controller
	saved  *rollout.Saved // the last state read from the ConfigMap
	leader bool
}

// newRunner builds the runner of plan from serve's flags.
func newRunner(s *server.Server, plan rollout.Plan, log *slog.Logger, kubeconfig, istioVS, stateCM, leaseName string) (*runner, error) {
	r := &runner{s: s, plan: plan, log: log}
	var client kubernetes.Interface
	kube := func() (kubernetes.Interface, error) {
		if client != nil {
			return client, nil
		}
		rc, err := restConfig(kubeconfig)
		if err == nil {
			client, err = kubernetes.NewForConfig(rc)
		}
		return client, err
	}
	if istioVS != "" {
		ns, name, ok := strings.Cut(istioVS, "/")
		rc, err := restConfig(kubeconfig)
		if err == nil && !ok {
			err = fmt.Errorf("want NAMESPACE/NAME, got %q", istioVS)
		}
		var dc dynamic.Interface
		if err == nil {
			dc, err = dynamic.NewForConfig(rc)
		}
		if err != nil {
			return nil, fmt.Errorf("-istio-virtualservice: %w", err)
		}
		r.istio = rollout.IstioWeights(dc, ns, name, plan.Stable, plan.Canary)
	}
	if stateCM != "" {
		ns, name, ok := strings.Cut(stateCM, "/")
		c, err := kube()
		if err == nil && !ok {
			err = fmt.Errorf("want NAMESPACE/NAME, got %q", stateCM)
		}
		if err != nil {
			return nil, fmt.Errorf("-rollout-state: %w", err)
		}
		r.state = &k8s.RolloutState{Client: c, Namespace: ns, Name: name}
	}
	if leaseName != "" {
		ns, name, ok := strings.Cut(leaseName, "/")
		c, err := kube()
		if err == nil && !ok {
			err = fmt.Errorf("want NAMESPACE/NAME, got %q", leaseName)
		}
		if err == nil && r.state == nil && r.istio == nil {
			err = errors.New("needs -rollout-state (or -istio-virtualservice): without it the leader's weights would stay in its memory, and the other replicas would serve the file's")
		}
		if err != nil {
			return nil, fmt.Errorf("-leader-lease: %w", err)
		}
		id, _ := os.Hostname()
		r.lease = &lease{client: c, namespace: ns, name: name, id: fmt.Sprintf("%s_%d", id, os.Getpid())}
	}
	return r, nil
}

// lease names the Lease of the leader election.
type lease struct {
	client              kubernetes.Interface
	namespace, name, id string
	timing              k8s.LeaseTiming
}

// report is /rollout's answer.
type report struct {
	// Role is "leader" (this replica runs the plan), "follower" (it
	// serves the weights the leader saved) or "single" (no election).
	Role string `json:"role"`
	rollout.Status
}

// Report is the rollout's state as this replica knows it.
func (r *runner) Report() report {
	r.mu.Lock()
	defer r.mu.Unlock()
	role := "single"
	if r.lease != nil {
		role = "follower"
		if r.leader {
			role = "leader"
		}
	}
	if r.ro != nil && (r.lease == nil || r.leader) {
		return report{role, r.ro.Status()}
	}
	st := rollout.Status{Plan: r.plan, State: rollout.Progressing}
	if sv := r.saved; sv != nil && sv.Plan == rollout.PlanID(r.plan) {
		st.State, st.Step, st.Weight, st.Reason = sv.State, sv.Step, sv.Weight, sv.Reason
	}
	return report{role, st}
}

func (r *runner) weights(w int) map[string]int {
	return map[string]int{r.plan.Stable: 100 - w, r.plan.Canary: w}
}

// Run runs until ctx ends.
func (r *runner) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if r.state != nil {
		g.Go(func() error {
			return r.state.Follow(ctx, r.plan.Model, func(sv rollout.Saved) {
				r.mu.Lock()
				r.saved = &sv
				r.mu.Unlock()
				if sv.Plan != rollout.PlanID(r.plan) || r.istio != nil {
					return
				}
				if err := r.s.SetWeights(r.plan.Model, r.weights(sv.Weight)); err != nil {
					r.log.Error("rollout: serving the saved weights", "err", err)
				}
			})
		})
	}
	if r.lease == nil {
		g.Go(func() error { r.lead(ctx); return nil })
	} else {
		l := r.lease
		g.Go(func() error {
			return k8s.Lead(ctx, l.client, l.namespace, l.name, l.id, l.timing, func(ctx context.Context) {
				r.mu.Lock()
				r.leader = true
				r.mu.Unlock()
				r.log.Info("rollout: leading", "lease", l.namespace+"/"+l.name, "id", l.id)
				r.lead(ctx)
				<-ctx.Done() // keep the lease: another leader would run the plan again
				r.mu.Lock()
				r.leader = false
				r.mu.Unlock()
			})
		})
	}
	return g.Wait()
}

// lead runs the plan, from the saved state if there is one.
func (r *runner) lead(ctx context.Context) {
	// the rollout starts from a served configuration
	if r.s.Wait(ctx, func(st server.Status) bool { return st.Version != "" }) != nil {
		return
	}
	ro, err := r.controller()
	if err != nil {
		r.log.Error("rollout", "err", err)
		return
	}
	if r.state != nil {
		sv, ok, err := r.state.Load(ctx, r.plan.Model)
		if err != nil {
			r.log.Error("rollout: reading the saved state; not running the plan", "err", err)
			return
		}
		if ok {
			ro.Resume(sv)
		}
		ro.OnChange = func(st rollout.Status) {
			if err := r.state.Save(context.WithoutCancel(ctx), r.plan.Model, st.Save()); err != nil {
				r.log.Error("rollout: saving the state", "err", err)
			}
		}
	}
	r.mu.Lock()
	r.ro = ro
	r.mu.Unlock()
	if err := ro.Run(ctx); err != nil && ctx.Err() == nil {
		r.log.Error("rollout", "err", err)
	}
	st := ro.Status()
	r.log.Info("rollout ended", "model", st.Plan.Model, "state", st.State, "weight", st.Weight, "reason", st.Reason)
}

// controller builds the controller of the plan: weights are saved (so
// every replica serves them) and published by this replica, or written to
// the VirtualService in Istio mode; SLO samples are scraped from every
// ready endpoint of each version (rollout.Targets).
func (r *runner) controller() (*rollout.Controller, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	targets := rollout.Targets{Config: r.s.Config, Discovered: r.s.Discovered, Resolver: net.DefaultResolver}
	sample := r.sample
	switch {
	case sample != nil:
	case r.plan.Prometheus != nil:
		p, err := rollout.NewPrometheus(*r.plan.Prometheus, hc.Transport)
		if err != nil {
			return nil, err
		}
		sample = p.Sample
	default:
		sample = func(ctx context.Context, version string) (rollout.Sample, error) {
			return targets.Sample(ctx, hc, r.plan.Model, version)
		}
	}
	var ro *rollout.Controller
	apply := func(w int) error {
		if r.istio != nil {
			return r.istio(w)
		}
		if r.state != nil {
			sv := ro.Status().Save()
			sv.Weight = w
			if err := r.state.Save(context.Background(), r.plan.Model, sv); err != nil {
				return fmt.Errorf("saving weight %d: %w", w, err)
			}
		}
		return r.s.SetWeights(r.plan.Model, r.weights(w))
	}
	ro, err := rollout.New(r.plan, apply, sample)
	return ro, err
}
