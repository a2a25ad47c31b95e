package load

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Stage is one step of a ramp: over Duration the target (a rate in
// requests/s for the open model, a number of virtual users for the closed
// one) moves linearly from the previous stage's target to Target.
type Stage struct {
	Duration time.Duration `json:"duration"`
	Target   float64       `json:"target"`
}

// Ramp is a piecewise-linear target over time, starting at Start.
type Ramp struct {
	Start  float64 `json:"start"`
	Stages []Stage `json:"stages"`
}

// Constant is a ramp that holds v for d.
func Constant(v float64, d time.Duration) Ramp {
	return Ramp{Start: v, Stages: []Stage{{Duration: d, Target: v}}}
}

// Validate reports problems with field paths under name.
func (r Ramp) Validate(name string) error {
	var errs []error
	if r.Start < 0 || math.IsNaN(r.Start) || math.IsInf(r.Start, 0) {
		errs = append(errs, fmt.Errorf("%s.start: must be a finite number ≥ 0, got %v", name, r.Start))
	}
	if len(r.Stages) == 0 {
		errs = append(errs, fmt.Errorf("%s.stages: at least one stage is required", name))
	}
	for i, s := range r.Stages {
		if s.Duration <= 0 {
			errs = append(errs, fmt.Errorf("%s.stages[%d].duration: must be positive, got %s", name, i, s.Duration))
		}
		if s.Target < 0 || math.IsNaN(s.Target) || math.IsInf(s.Target, 0) {
			errs = append(errs, fmt.Errorf("%s.stages[%d].target: must be a finite number ≥ 0, got %v", name, i, s.Target))
		}
	}
	return errors.Join(errs...)
}

// Duration is the ramp's total length.
func (r Ramp) Duration() time.Duration {
	var d time.Duration
	for _, s := range r.Stages {
		d += s.Duration
	}
	return d
}

// At is the target at offset t (the last target after the end).
func (r Ramp) At(t time.Duration) float64 {
	from := r.Start
	for _, s := range r.Stages {
		if t < s.Duration {
			return from + (s.Target-from)*float64(t)/float64(s.Duration)
		}
		t -= s.Duration
		from = s.Target
	}
	return from
}

// Arrivals yields the intended send offsets of an open model: the integral
// of the rate reaches 1, 2, 3, … at them (constant spacing), or, with
// Poisson, exponential gaps of mean 1/rate. Offsets come from arithmetic,
// not from a clock, so a late generator does not shift the schedule.
type Arrivals struct {
	ramp    Ramp
	poisson bool
	rng     *rand.Rand
	end     time.Duration

	stage int           // current stage
	base  time.Duration // offset where the current stage starts
	from  float64       // rate at its start
	pos   time.Duration // last arrival
	debt  float64       // arrivals still owed before the next one (1 for constant spacing)
}

// NewArrivals returns the schedule of r; seed fixes the Poisson draws.
func NewArrivals(r Ramp, poisson bool, seed uint64) *Arrivals {
	a := &Arrivals{ramp: r, poisson: poisson, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), end: r.Duration(), from: r.Start}
	a.debt = a.draw()
	return a
}

func (a *Arrivals) draw() float64 {
	if a.poisson {
		return a.rng.ExpFloat64()
	}
	return 1
}

// Next returns the next intended send offset, or false after the ramp ends.
// Within a stage the rate is linear, r(t) = r0 + k·t, so the time at which
// its integral grows by the debt d solves r0·t + k·t²/2 = d.
func (a *Arrivals) Next() (time.Duration, bool) {
	for a.stage < len(a.ramp.Stages) {
		s := a.ramp.Stages[a.stage]
		t0 := (a.pos - a.base).Seconds() // into the stage
		dur := s.Duration.Seconds()
		k := (s.Target - a.from) / dur
		r0 := a.from + k*t0 // rate now
		left := dur - t0
		avail := r0*left + k*left*left/2 // arrivals until the stage ends
		// The tolerance keeps rounding from losing the arrival that falls
		// exactly on the stage's end.
		if avail >= a.debt-1e-9 {
			var dt float64
			if math.Abs(k) < 1e-12 {
				dt = a.debt / r0
			} else {
				// k/2·dt² + r0·dt − debt = 0, the positive root, in the
				// form that stays accurate when k is small.
				dt = 2 * a.debt / (r0 + math.Sqrt(r0*r0+2*k*a.debt))
			}
			a.pos += time.Duration(dt * float64(time.Second))
			if a.pos > a.base+s.Duration {
				a.pos = a.base + s.Duration
			}
			a.debt = a.draw()
			return a.pos, true
		}
		a.debt -= max(avail, 0)
		a.base += s.Duration
		a.pos = a.base
		a.from = s.Target
		a.stage++
	}
	return 0, false
}
