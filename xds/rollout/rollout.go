// Package rollout is the control plane's canary controller: it moves a
// model's traffic to a canary version step by step, holding each step while
// the canary's SLOs hold compared with the stable version — error rate,
// p99 time to first token, p99 time per output token, read from the
// sidecars' Prometheus metrics — and rolls back to 0 % on a breach,
// recording why. The decision is separate from how weights are applied
// (autoglm-xds publishes them; in Istio mode a VirtualService would).
package rollout

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
// Every comparison is made over the step's window so far (from the first
// sample of the step that could be measured), and a breach must be seen at
// Confirmations checks in a row before the canary is rolled back.
type SLO struct {
	// MaxErrorRate is the canary's highest rate of 5xx answers: breached
	// when the lower confidence bound of the rate (Wilson, one-sided, at
	// Confidence) is above it — so a few errors among few requests do not
	// roll back, and a steady excess does.
	MaxErrorRate float64 `yaml:"max_error_rate" json:"max_error_rate"`
	// MaxShedRate bounds the canary's 429s (load shed) the same way (nil:
	// not checked).
	MaxShedRate *float64 `yaml:"max_shed_rate" json:"max_shed_rate,omitempty"`
	// MinGoodput is the lowest share of canary requests that must get
	// their first token within GoodputTTFT (nil: not checked); breached
	// when the upper confidence bound of the share is below it.
	MinGoodput  *float64      `yaml:"min_goodput" json:"min_goodput,omitempty"`
	GoodputTTFT time.Duration `yaml:"goodput_ttft" json:"goodput_ttft,omitempty"`
	// MaxTTFTRatio and MaxTPOTRatio bound the canary's p99 as a multiple
	// of the stable version's (0: not checked), compared once both
	// versions have MinRequests requests in the window.
	MaxTTFTRatio float64 `yaml:"max_ttft_ratio" json:"max_ttft_ratio"`
	MaxTPOTRatio float64 `yaml:"max_tpot_ratio" json:"max_tpot_ratio"`
	// MinRequests is how many canary requests a step needs before it can
	// pass; a step that sees fewer is held longer.
	MinRequests int `yaml:"min_requests" json:"min_requests"`
	// Confirmations is how many checks in a row must find a breach
	// (default 2).
	Confirmations int `yaml:"confirmations" json:"confirmations,omitempty"`
	// Confidence is the one-sided confidence of the rate bounds (default
	// 0.95).
	Confidence float64 `yaml:"confidence" json:"confidence,omitempty"`
	// MinReadyEndpoints is the fewest canary endpoints that must be ready
	// and answer (default 1); MaxUnmeasured is how many checks in a row
	// may fail to measure the canary (unreachable, too few ready
	// endpoints, no traffic while the stable version has plenty) before
	// it is rolled back (default 3).
	MinReadyEndpoints int `yaml:"min_ready_endpoints" json:"min_ready_endpoints,omitempty"`
	MaxUnmeasured     int `yaml:"max_unmeasured" json:"max_unmeasured,omitempty"`
}

func (s SLO) confirmations() int { return cmp.Or(s.Confirmations, 2) }
func (s SLO) maxUnmeasured() int { return cmp.Or(s.MaxUnmeasured, 3) }
func (s SLO) minReady() int      { return cmp.Or(s.MinReadyEndpoints, 1) }

// z is the normal quantile of the confidence (one-sided).
func (s SLO) z() float64 {
	c := cmp.Or(s.Confidence, 0.95)
	return math.Sqrt2 * math.Erfinv(2*c-1)
}

// wilson is the Wilson score interval of k successes in n at z.
func wilson(k, n, z float64) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	p := k / n
	d := 1 + z*z/n
	mid := (p + z*z/(2*n)) / d
	half := z * math.Sqrt(p*(1-p)/n+z*z/(4*n*n)) / d
	return max(mid-half, 0), min(mid+half, 1)
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
	// Prometheus, when set, is where the versions' counters are read
	// (its HTTP API) instead of scraping their sidecars.
	Prometheus *PrometheusSource `yaml:"prometheus" json:"prometheus,omitempty"`
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
	rate := func(path string, v *float64) {
		if v != nil && (*v < 0 || *v > 1 || math.IsNaN(*v)) {
			errs = append(errs, fmt.Errorf("%s: must be 0..1, got %v", path, *v))
		}
	}
	rate("slo.max_shed_rate", p.SLO.MaxShedRate)
	rate("slo.min_goodput", p.SLO.MinGoodput)
	if p.SLO.MinGoodput != nil && p.SLO.GoodputTTFT <= 0 {
		errs = append(errs, errors.New("slo.goodput_ttft: required (positive) with slo.min_goodput"))
	}
	if p.SLO.MaxTTFTRatio < 0 || p.SLO.MaxTPOTRatio < 0 {
		errs = append(errs, errors.New("slo.max_ttft_ratio, slo.max_tpot_ratio: must not be negative"))
	}
	if p.SLO.MinRequests < 0 || p.SLO.Confirmations < 0 || p.SLO.MinReadyEndpoints < 0 || p.SLO.MaxUnmeasured < 0 {
		errs = append(errs, errors.New("slo.min_requests, slo.confirmations, slo.min_ready_endpoints, slo.max_unmeasured: must not be negative"))
	}
	if c := p.SLO.Confidence; c != 0 && (c < 0.5 || c >= 1) {
		errs = append(errs, fmt.Errorf("slo.confidence: must be in [0.5, 1), got %v", c))
	}
	if p.Interval <= 0 {
		errs = append(errs, errors.New("interval: must be positive"))
	}
	if p.Prometheus != nil {
		errs = append(errs, p.Prometheus.validate())
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
	Plan   Plan   `json:"plan"`
	State  string `json:"state"`
	Weight int    `json:"weight"`
	// Step is the index of the step being held (or the last one held).
	Step   int    `json:"step"`
	Reason string `json:"reason,omitempty"`
	// Source says where the versions' metrics are read from; Window is
	// what the last check measured.
	Source  string  `json:"source,omitempty"`
	Window  *Check  `json:"window,omitempty"`
	History []Event `json:"history"`
}

// Controller runs one plan.
type Controller struct {
	plan Plan
	// Apply sets the canary's weight (the stable version gets the rest).
	apply func(canaryWeight int) error
	// OnChange, when set before Run, gets the status after every change
	// (to save it where the next leader finds it).
	OnChange func(Status)
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
	msg := fmt.Sprintf(format, args...)
	c.status.Weight = weight
	if state != "" {
		c.status.State = state
		if state == RolledBack || state == Aborted {
			c.status.Reason = msg
		}
	}
	c.status.History = append(c.status.History, Event{At: time.Now(), Weight: weight, Message: msg})
	c.mu.Unlock()
	if c.OnChange != nil {
		c.OnChange(c.Status())
	}
}

// Saved is what a controller needs to resume a plan: written by
// OnChange's receiver where every replica can read it, and given to
// Resume by the next leader.
type Saved struct {
	// Plan is the plan's fingerprint (PlanID): a changed plan starts over.
	Plan   string `json:"plan"`
	State  string `json:"state"`
	Step   int    `json:"step"`
	Weight int    `json:"weight"`
	Reason string `json:"reason,omitempty"`
}

// PlanID fingerprints a plan: model, versions, steps and SLOs.
func PlanID(p Plan) string {
	b, _ := json.Marshal(p)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// Save is the resumable part of a status.
func (st Status) Save() Saved {
	return Saved{Plan: PlanID(st.Plan), State: st.State, Step: st.Step, Weight: st.Weight, Reason: st.Reason}
}

// Resume continues from what a previous leader saved for this plan: a
// finished rollout stays finished (Run returns at once), one in progress
// holds its step again from the start. Saved state of another plan is
// ignored. Call before Run.
func (c *Controller) Resume(sv Saved) {
	if sv.Plan != PlanID(c.plan) || sv.Step < 0 || sv.Step >= len(c.plan.Steps) {
		return
	}
	c.mu.Lock()
	c.status.State, c.status.Step, c.status.Weight, c.status.Reason = sv.State, sv.Step, sv.Weight, sv.Reason
	c.status.History = append(c.status.History, Event{At: time.Now(), Weight: sv.Weight, Message: fmt.Sprintf("resumed: %s at step %d (%d%%)", sv.State, sv.Step, sv.Weight)})
	c.mu.Unlock()
}

// Run walks the steps. It returns when the canary is promoted (the last
// step's weight), rolled back, or ctx ends (the weights stay as they are,
// and a new leader resumes from them).
func (c *Controller) Run(ctx context.Context) error {
	st := c.Status()
	switch st.State {
	case Promoted, RolledBack, Aborted:
		// Finished before (Resume): make sure the weights say so.
		return c.apply(st.Weight)
	}
	for i, step := range c.plan.Steps {
		if i < st.Step {
			continue
		}
		c.mu.Lock()
		c.status.Step = i
		c.mu.Unlock()
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

// hold waits out a step, checking the SLOs every interval from the first
// measurable sample: a breach confirmed at Confirmations checks in a row,
// or a canary that cannot be measured for MaxUnmeasured checks in a row,
// ends it; too few canary requests extend it.
func (c *Controller) hold(ctx context.Context, step Step) (string, error) {
	slo := c.plan.SLO
	var s0, c0 *Sample
	end := time.Now().Add(step.Hold)
	tick := time.NewTicker(c.plan.Interval)
	defer tick.Stop()
	unmeasured, breaches := 0, 0
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-tick.C:
			}
		}
		s1, c1, err := c.both(ctx)
		if err == nil && c1.Ready < slo.minReady() {
			err = fmt.Errorf("canary has %d ready endpoints, want at least %d", c1.Ready, slo.minReady())
		}
		var stable, canary Window
		if err == nil && s0 != nil {
			stable, canary = s1.Since(*s0), c1.Since(*c0)
			err = c.silent(step, stable, canary)
		}
		if err != nil {
			unmeasured++
			c.record(step.Weight, "", "canary not measured (%d of %d): %v", unmeasured, slo.maxUnmeasured(), err)
			if unmeasured >= slo.maxUnmeasured() {
				return fmt.Sprintf("canary not measured at %d checks in a row: %v", unmeasured, err), nil
			}
			continue
		}
		unmeasured = 0
		if s0 == nil {
			s0, c0 = &s1, &c1
			continue
		}
		c.mu.Lock()
		c.status.Window = &Check{At: time.Now(), Weight: step.Weight, Stable: summarize(stable), Canary: summarize(canary)}
		c.mu.Unlock()
		if b := c.breach(stable, canary); b != "" {
			breaches++
			if breaches >= slo.confirmations() {
				return b, nil
			}
			c.record(step.Weight, "", "breach seen (%d of %d): %s", breaches, slo.confirmations(), b)
			continue
		}
		breaches = 0
		if time.Now().After(end) && c.judged(step, stable, canary) {
			return "", nil
		}
	}
}

// judged says whether the window is enough to pass a step: the canary has
// MinRequests, and — where latency is compared and the stable version
// still has traffic — so has the stable version.
func (c *Controller) judged(step Step, stable, canary Window) bool {
	slo := c.plan.SLO
	need := float64(slo.MinRequests)
	if canary.Requests < need {
		return false
	}
	latency := slo.MaxTTFTRatio > 0 || slo.MaxTPOTRatio > 0
	return !latency || step.Weight >= 100 || stable.Requests >= need
}

// noTraffic is how many canary requests the stable version's traffic
// implies before no canary request at all counts as a failure to measure
// it: with Poisson arrivals the chance of none when 20 are expected is
// about 2e-9.
const noTraffic = 20

// silent says when a canary that should have traffic has none (it is not
// reachable through the mesh, or not selected).
func (c *Controller) silent(step Step, stable, canary Window) error {
	if step.Weight <= 0 || step.Weight >= 100 || canary.Requests > 0 {
		return nil
	}
	if expected := stable.Requests * float64(step.Weight) / float64(100-step.Weight); expected >= noTraffic {
		return fmt.Errorf("the canary served no requests while the stable version served %.0f (%.0f expected at %d%%)", stable.Requests, expected, step.Weight)
	}
	return nil
}

func (c *Controller) both(ctx context.Context) (Sample, Sample, error) {
	s, err := c.sample(ctx, c.plan.Stable)
	if err != nil && s.Ready == 0 {
		return s, s, fmt.Errorf("stable %s: %w", c.plan.Stable, err)
	}
	k, err := c.sample(ctx, c.plan.Canary)
	if err != nil && k.Ready == 0 {
		return s, k, fmt.Errorf("canary %s: %w", c.plan.Canary, err)
	}
	c.mu.Lock()
	c.status.Source = fmt.Sprintf("stable: %s; canary: %s", s.Source, k.Source)
	c.mu.Unlock()
	return s, k, nil
}

// breach says which SLO the canary broke in this window, or "".
func (c *Controller) breach(stable, canary Window) string {
	slo := c.plan.SLO
	z := slo.z()
	if lo, _ := wilson(canary.Errors, canary.Requests, z); canary.Errors > 0 && lo > slo.MaxErrorRate {
		return fmt.Sprintf("canary error rate %.4f > %.4f (%.0f of %.0f requests; lower bound %.4f)", canary.ErrorRate(), slo.MaxErrorRate, canary.Errors, canary.Requests, lo)
	}
	if m := slo.MaxShedRate; m != nil {
		if lo, _ := wilson(canary.Shed, canary.Requests, z); canary.Shed > 0 && lo > *m {
			return fmt.Sprintf("canary shed rate (429) %.4f > %.4f (%.0f of %.0f requests; lower bound %.4f)", canary.ShedRate(), *m, canary.Shed, canary.Requests, lo)
		}
	}
	if m := slo.MinGoodput; m != nil && canary.Requests > 0 {
		g := canary.Goodput(slo.GoodputTTFT.Seconds())
		if _, hi := wilson(g*canary.Requests, canary.Requests, z); hi < *m {
			return fmt.Sprintf("canary goodput %.4f < %.4f (first token within %s; upper bound %.4f of %.0f requests)", g, *m, slo.GoodputTTFT, hi, canary.Requests)
		}
	}
	need := float64(max(slo.MinRequests, 1))
	if canary.Requests < need || stable.Requests < need {
		return ""
	}
	// The canary breaches a ratio limit when the lower confidence bound
	// of its p99 is above the limit times the upper bound of the stable
	// version's: both versions' sampling noise is on the side of passing.
	ratio := func(name string, limit float64, sh, kh map[float64]float64) string {
		s, k := quantile(0.99, sh, nil), quantile(0.99, kh, nil)
		if limit <= 0 || math.IsNaN(s) || math.IsNaN(k) || s <= 0 {
			return ""
		}
		sHi, kLo := quantileBound(sh, 0.99, z, true), quantileBound(kh, 0.99, z, false)
		if kLo > limit*sHi {
			return fmt.Sprintf("canary p99 %s %.1f ms (lower bound %.1f ms) > %.2f × stable's %.1f ms (upper bound %.1f ms)", name, k*1e3, kLo*1e3, limit, s*1e3, sHi*1e3)
		}
		return ""
	}
	if b := ratio("time to first token", slo.MaxTTFTRatio, stable.TTFT, canary.TTFT); b != "" {
		return b
	}
	return ratio("time per output token", slo.MaxTPOTRatio, stable.TPOT, canary.TPOT)
}

// Check is what the last check of a step measured.
type Check struct {
	At     time.Time `json:"at"`
	Weight int       `json:"weight"`
	Stable Measured  `json:"stable"`
	Canary Measured  `json:"canary"`
}

// Measured is one version's window so far in the step.
type Measured struct {
	Requests float64 `json:"requests"`
	Errors   float64 `json:"errors"`
	Shed     float64 `json:"shed"`
	// TTFTP99 and TPOTP99 are in seconds (null without observations).
	TTFTP99 *float64 `json:"ttft_p99_seconds"`
	TPOTP99 *float64 `json:"tpot_p99_seconds"`
}

func summarize(w Window) Measured {
	num := func(v float64) *float64 {
		if math.IsNaN(v) {
			return nil
		}
		return &v
	}
	return Measured{Requests: w.Requests, Errors: w.Errors, Shed: w.Shed, TTFTP99: num(w.TTFTP99), TPOTP99: num(w.TPOTP99)}
}
