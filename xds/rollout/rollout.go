// Package rollout is the control plane's canary controller: it moves a
// model's traffic to a canary version step by step, holding each step while
// the canary's SLOs hold compared with the stable version — error rate,
// p99 time to first token, p99 time per output token, read from the
// sidecars' Prometheus metrics — and rolls back to 0 % on a breach,
// recording why. The decision is separate from how weights are applied
// (autoglm-xds publishes them; in Istio mode a VirtualService would).
package rollout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Step is one canary weight held for a time.
type Step struct {
	Weight int           `yaml:"weight" json:"weight"`
	Hold   time.Duration `yaml:"hold" json:"hold"`
}

// SLO bounds the canary, absolutely or relative to the stable version.
type SLO struct {
	// MaxErrorRate is the canary's highest error rate (5xx and 429).
	MaxErrorRate float64 `yaml:"max_error_rate" json:"max_error_rate"`
	// MaxTTFTRatio and MaxTPOTRatio bound the canary's p99 as a multiple
	// of the stable version's (0: not checked).
	MaxTTFTRatio float64 `yaml:"max_ttft_ratio" json:"max_ttft_ratio"`
	MaxTPOTRatio float64 `yaml:"max_tpot_ratio" json:"max_tpot_ratio"`
	// MinRequests is how many canary requests a step needs before it can
	// pass; a step that sees fewer is held longer.
	MinRequests int `yaml:"min_requests" json:"min_requests"`
}

// Plan is one canary rollout.
type Plan struct {
	Model  string `yaml:"model" json:"model"`
	Stable string `yaml:"stable" json:"stable"`
	Canary string `yaml:"canary" json:"canary"`
	Steps  []Step `yaml:"steps" json:"steps"`
	SLO    SLO    `yaml:"slo" json:"slo"`
	// Interval is how often the SLOs are checked during a hold.
	Interval time.Duration `yaml:"interval" json:"interval"`
}

// Validate reports every problem with its field path.
func (p *Plan) Validate() error {
	var errs []error
	if p.Model == "" || p.Stable == "" || p.Canary == "" || p.Stable == p.Canary {
		errs = append(errs, errors.New("model, stable and canary are required, and stable and canary differ"))
	}
	if len(p.Steps) == 0 {
		errs = append(errs, errors.New("steps: at least one step is required"))
	}
	for i, s := range p.Steps {
		if s.Weight < 0 || s.Weight > 100 || (i > 0 && s.Weight < p.Steps[i-1].Weight) {
			errs = append(errs, fmt.Errorf("steps[%d].weight: must be 0..100 and not below the previous step, got %d", i, s.Weight))
		}
		if s.Hold < 0 {
			errs = append(errs, fmt.Errorf("steps[%d].hold: must not be negative", i))
		}
	}
	if p.SLO.MaxErrorRate < 0 || p.SLO.MaxErrorRate > 1 {
		errs = append(errs, fmt.Errorf("slo.max_error_rate: must be 0..1, got %v", p.SLO.MaxErrorRate))
	}
	if p.Interval <= 0 {
		errs = append(errs, errors.New("interval: must be positive"))
	}
	return errors.Join(errs...)
}

// States of a rollout.
const (
	Progressing = "progressing"
	Promoted    = "promoted"
	RolledBack  = "rolled_back"
	Aborted     = "aborted"
)

// Event is one entry of a rollout's history.
type Event struct {
	At      time.Time `json:"at"`
	Weight  int       `json:"weight"`
	Message string    `json:"message"`
}

// Status is a rollout's state and history.
type Status struct {
	Plan    Plan    `json:"plan"`
	State   string  `json:"state"`
	Weight  int     `json:"weight"`
	Reason  string  `json:"reason,omitempty"`
	History []Event `json:"history"`
}

// Controller runs one plan.
type Controller struct {
	plan Plan
	// Apply sets the canary's weight (the stable version gets the rest).
	apply func(canaryWeight int) error
	// sample reads a version's cumulative counters.
	sample func(ctx context.Context, version string) (Sample, error)

	mu     sync.Mutex
	status Status
}

// New returns a controller; Run starts the rollout.
func New(p Plan, apply func(int) error, sample func(context.Context, string) (Sample, error)) (*Controller, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Controller{plan: p, apply: apply, sample: sample, status: Status{Plan: p, State: Progressing}}, nil
}

// Status is a copy of the current state.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.status
	st.History = append([]Event(nil), st.History...)
	return st
}

func (c *Controller) record(weight int, state, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	c.status.Weight = weight
	if state != "" {
		c.status.State = state
		if state == RolledBack || state == Aborted {
			c.status.Reason = msg
		}
	}
	c.status.History = append(c.status.History, Event{At: time.Now(), Weight: weight, Message: msg})
}

// Run walks the steps. It returns when the canary is promoted (the last
// step's weight), rolled back, or ctx ends (the weights stay as they are).
func (c *Controller) Run(ctx context.Context) error {
	for i, step := range c.plan.Steps {
		if err := c.apply(step.Weight); err != nil {
			c.record(c.Status().Weight, Aborted, "step %d: applying weight %d: %v", i, step.Weight, err)
			return err
		}
		c.record(step.Weight, "", "step %d: canary at %d%%, holding %s", i, step.Weight, step.Hold)
		breach, err := c.hold(ctx, step)
		if err != nil {
			return err
		}
		if breach != "" {
			if err := c.apply(0); err != nil {
				c.record(step.Weight, Aborted, "rollback failed: %v (breach: %s)", err, breach)
				return err
			}
			c.record(0, RolledBack, "step %d: %s", i, breach)
			return nil
		}
	}
	c.record(c.plan.Steps[len(c.plan.Steps)-1].Weight, Promoted, "all steps passed")
	return nil
}

// hold waits out a step, checking the SLOs every interval: a breach ends it
// at once; too few canary requests extend it.
func (c *Controller) hold(ctx context.Context, step Step) (string, error) {
	s0, c0, err := c.both(ctx)
	if err != nil {
		return "", err
	}
	end := time.Now().Add(step.Hold)
	tick := time.NewTicker(c.plan.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
		s1, c1, err := c.both(ctx)
		if err != nil {
			c.record(step.Weight, "", "metrics: %v", err)
			continue
		}
		stable, canary := s1.Since(s0), c1.Since(c0)
		if b := c.breach(stable, canary); b != "" {
			return b, nil
		}
		if time.Now().After(end) && canary.Requests >= float64(c.plan.SLO.MinRequests) {
			return "", nil
		}
	}
}

func (c *Controller) both(ctx context.Context) (Sample, Sample, error) {
	s, err := c.sample(ctx, c.plan.Stable)
	if err != nil {
		return s, s, err
	}
	k, err := c.sample(ctx, c.plan.Canary)
	return s, k, err
}

// breach says which SLO the canary broke in this window, or "".
func (c *Controller) breach(stable, canary Window) string {
	slo := c.plan.SLO
	if canary.Requests > 0 && canary.ErrorRate() > slo.MaxErrorRate {
		return fmt.Sprintf("canary error rate %.3f > %.3f (%.0f of %.0f requests)", canary.ErrorRate(), slo.MaxErrorRate, canary.Errors, canary.Requests)
	}
	if canary.Requests < float64(max(slo.MinRequests, 1)) {
		return ""
	}
	ratio := func(name string, limit, s, k float64) string {
		if limit <= 0 || math.IsNaN(s) || math.IsNaN(k) || s <= 0 {
			return ""
		}
		if k/s > limit {
			return fmt.Sprintf("canary p99 %s %.1f ms > %.1f × stable's %.1f ms", name, k*1e3, limit, s*1e3)
		}
		return ""
	}
	if b := ratio("time to first token", slo.MaxTTFTRatio, stable.TTFTP99, canary.TTFTP99); b != "" {
		return b
	}
	return ratio("time per output token", slo.MaxTPOTRatio, stable.TPOTP99, canary.TPOTP99)
}
