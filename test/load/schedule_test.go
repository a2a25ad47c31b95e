package load

import (
	"math"
	"strings"
	"testing"
	"time"
)

func count(r Ramp, poisson bool, seed uint64) (int, time.Duration) {
	a := NewArrivals(r, poisson, seed)
	n, last := 0, time.Duration(0)
	for off, ok := a.Next(); ok; off, ok = a.Next() {
		if off < last {
			panic("arrivals go back in time")
		}
		n, last = n+1, off
	}
	return n, last
}

func TestArrivals(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Ramp
		want int
	}{
		{"constant 100/s for 10s", Constant(100, 10*time.Second), 1000},
		{"constant 10k/s for 2s", Constant(10000, 2*time.Second), 20000},
		{"ramp 0 to 100 over 10s", Ramp{Stages: []Stage{{10 * time.Second, 100}}}, 500},
		{"ramp up, hold, down", Ramp{Start: 10, Stages: []Stage{{5 * time.Second, 50}, {10 * time.Second, 50}, {5 * time.Second, 0}}}, 150 + 500 + 125},
		{"idle stage", Ramp{Stages: []Stage{{time.Second, 0}, {time.Second, 100}}}, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, last := count(tc.r, false, 1)
			if n != tc.want {
				t.Fatalf("%d arrivals, want %d", n, tc.want)
			}
			if last > tc.r.Duration() {
				t.Fatalf("last arrival at %s, after the end %s", last, tc.r.Duration())
			}
		})
	}
	// Constant spacing is exact.
	a := NewArrivals(Constant(4, time.Second), false, 1)
	for i := 1; i <= 4; i++ {
		if off, _ := a.Next(); off != time.Duration(i)*250*time.Millisecond {
			t.Fatalf("arrival %d at %s", i, off)
		}
	}
}

func TestPoissonArrivals(t *testing.T) {
	r := Constant(1000, 20*time.Second)
	n, _ := count(r, true, 7)
	if math.Abs(float64(n)-20000) > 4*math.Sqrt(20000) {
		t.Fatalf("%d arrivals, want 20000 ± 4σ", n)
	}
	if m, _ := count(r, true, 7); m != n {
		t.Fatal("the same seed must give the same schedule")
	}
	// Gaps are exponential: their coefficient of variation is about 1.
	a := NewArrivals(r, true, 3)
	var prev time.Duration
	var sum, sq float64
	k := 0
	for off, ok := a.Next(); ok; off, ok = a.Next() {
		g := (off - prev).Seconds()
		sum, sq, prev, k = sum+g, sq+g*g, off, k+1
	}
	mean := sum / float64(k)
	cv := math.Sqrt(sq/float64(k)-mean*mean) / mean
	if cv < 0.9 || cv > 1.1 {
		t.Fatalf("coefficient of variation of the gaps %.2f, want ≈ 1", cv)
	}
}

func TestRampValidate(t *testing.T) {
	err := Ramp{Start: -1, Stages: []Stage{{0, 5}, {time.Second, math.NaN()}}}.Validate("rate")
	for _, want := range []string{"rate.start", "rate.stages[0].duration", "rate.stages[1].target"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	if err := (Ramp{}).Validate("vus"); err == nil {
		t.Error("a ramp without stages is accepted")
	}
}
