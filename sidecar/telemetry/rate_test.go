package telemetry

import (
	"testing"
	"time"
)

func TestRate(t *testing.T) {
	var r Rate
	t0 := time.Unix(1000, 0)
	for s := range 20 {
		for range 5 {
			r.Add(t0.Add(time.Duration(s) * time.Second))
		}
	}
	// 20 seconds at 5/s: the last 10 whole seconds before 1020.
	if got := r.PerSecond(t0.Add(20 * time.Second)); got != 5 {
		t.Fatalf("%v/s, want 5", got)
	}
	// The current second does not count yet; 15 s later all have aged out.
	if got := r.PerSecond(t0.Add(35 * time.Second)); got != 0 {
		t.Fatalf("%v/s after the events aged out", got)
	}
	if got := r.PerSecond(t0.Add(25 * time.Second)); got != 2.5 {
		t.Fatalf("%v/s half way out, want 2.5", got)
	}
}
