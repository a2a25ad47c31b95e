package rollout

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeVersion is a version whose counters grow by rate requests (errs of
// them 5xx) at ttft seconds per sample taken, unless down.
type fakeVersion struct {
	rate, errs, ttft float64
	down             bool
	ready            int
	c                Counters
}

type fakeFleet struct {
	mu       sync.Mutex
	versions map[string]*fakeVersion
	samples  int
	// at runs before sample n is taken (to change the fleet mid-step).
	at map[int]func(map[string]*fakeVersion)
}

func (f *fakeFleet) sample(_ context.Context, version string) (Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if version == "canary" {
		f.samples++
		if fn := f.at[f.samples]; fn != nil {
			fn(f.versions)
		}
	}
	v := f.versions[version]
	if v.down {
		return Sample{}, errors.New("connection refused")
	}
	if v.c.TTFT == nil {
		v.c.TTFT, v.c.TPOT = map[float64]float64{}, map[float64]float64{}
	}
	v.c.Requests += v.rate
	v.c.Errors += v.errs
	for _, b := range []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, math.Inf(1)} {
		if v.ttft <= b {
			v.c.TTFT[b] += v.rate - v.errs
		}
	}
	c := v.c
	c.TTFT = maps(v.c.TTFT)
	return Sample{Targets: map[string]Counters{version: c}, Ready: max(v.ready, 1)}, nil
}

func maps(m map[float64]float64) map[float64]float64 {
	out := map[float64]float64{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func runFake(t *testing.T, f *fakeFleet, slo SLO) Status {
	t.Helper()
	var mu sync.Mutex
	weight := -1
	c, err := New(Plan{Model: "m", Stable: "stable", Canary: "canary", Interval: time.Millisecond,
		Steps: []Step{{Weight: 10, Hold: 20 * time.Millisecond}, {Weight: 50, Hold: 20 * time.Millisecond}, {Weight: 100}}, SLO: slo},
		func(w int) error { mu.Lock(); weight = w; mu.Unlock(); return nil }, f.sample)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Status()
	mu.Lock()
	defer mu.Unlock()
	if st.Weight != weight {
		t.Fatalf("status says %d%%, applied %d%%", st.Weight, weight)
	}
	return st
}

func fleet(canary fakeVersion) *fakeFleet {
	return &fakeFleet{versions: map[string]*fakeVersion{"stable": {rate: 100, ttft: 0.05}, "canary": &canary}}
}

var slo = SLO{MaxErrorRate: 0.01, MaxTTFTRatio: 1.5, MinRequests: 20}

func TestControllerHealthyPromoted(t *testing.T) {
	if st := runFake(t, fleet(fakeVersion{rate: 20, ttft: 0.05}), slo); st.State != Promoted || st.Weight != 100 {
		t.Fatalf("%+v", st)
	}
}

// TestControllerCanaryDownAtStart: unscrapeable when the step starts, the
// canary is rolled back after MaxUnmeasured checks, not left at 10 %.
func TestControllerCanaryDownAtStart(t *testing.T) {
	st := runFake(t, fleet(fakeVersion{rate: 20, ttft: 0.05, down: true}), slo)
	if st.State != RolledBack || st.Weight != 0 || !strings.Contains(st.Reason, "not measured at 3 checks in a row: canary canary: connection refused") {
		t.Fatalf("%+v", st)
	}
}

// TestControllerCanaryDiesMidStep: it answered, then stops answering.
func TestControllerCanaryDiesMidStep(t *testing.T) {
	f := fleet(fakeVersion{rate: 20, ttft: 0.05})
	f.at = map[int]func(map[string]*fakeVersion){8: func(v map[string]*fakeVersion) { v["canary"].down = true }}
	if st := runFake(t, f, slo); st.State != RolledBack || !strings.Contains(st.Reason, "connection refused") {
		t.Fatalf("%+v", st)
	}
}

// TestControllerNoTraffic: a canary that serves nothing while the stable
// version is busy is not measurable (it is not reachable in the mesh).
func TestControllerNoTraffic(t *testing.T) {
	if st := runFake(t, fleet(fakeVersion{rate: 0, ttft: 0.05}), slo); st.State != RolledBack || !strings.Contains(st.Reason, "served no requests") {
		t.Fatalf("%+v", st)
	}
}

// TestControllerNotReady: ready endpoints below the threshold.
func TestControllerNotReady(t *testing.T) {
	s := slo
	s.MinReadyEndpoints = 2
	if st := runFake(t, fleet(fakeVersion{rate: 20, ttft: 0.05, ready: 1}), s); st.State != RolledBack || !strings.Contains(st.Reason, "1 ready endpoints, want at least 2") {
		t.Fatalf("%+v", st)
	}
}

// TestControllerSlowAndFaulty: a breach is confirmed and rolled back.
func TestControllerSlowAndFaulty(t *testing.T) {
	if st := runFake(t, fleet(fakeVersion{rate: 20, ttft: 0.2}), slo); st.State != RolledBack || !strings.Contains(st.Reason, "time to first token") {
		t.Fatalf("%+v", st)
	}
	if st := runFake(t, fleet(fakeVersion{rate: 20, errs: 2, ttft: 0.05}), slo); st.State != RolledBack || !strings.Contains(st.Reason, "error rate") {
		t.Fatalf("%+v", st)
	}
}

// TestControllerOneBadCheckIsNotABreach: a breach seen once and gone at
// the next check does not roll back (Confirmations 2).
func TestControllerOneBadCheckIsNotABreach(t *testing.T) {
	f := fleet(fakeVersion{rate: 20, ttft: 0.05})
	// After the baseline (sample 1), sample 2 has a burst of errors
	// that sample 3's healthy traffic dilutes below the bound.
	f.at = map[int]func(map[string]*fakeVersion){
		2: func(v map[string]*fakeVersion) { v["canary"].errs = 8 },
		3: func(v map[string]*fakeVersion) { v["canary"].errs, v["canary"].rate = 0, 2000 },
		4: func(v map[string]*fakeVersion) { v["canary"].rate = 20 },
	}
	st := runFake(t, f, slo)
	if st.State != Promoted {
		t.Fatalf("%+v", st)
	}
	seen := false
	for _, e := range st.History {
		seen = seen || strings.Contains(e.Message, "breach seen (1 of 2)")
	}
	if !seen {
		t.Fatalf("the single breach is not in the history: %+v", st.History)
	}
}
