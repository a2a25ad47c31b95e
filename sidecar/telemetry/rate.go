package telemetry

import (
	"sync"
	"time"
)

// rateWindow is how far back Rate looks.
const rateWindow = 10

// Rate counts events per second over the last 10 whole seconds (for
// ORCA's qps and eps). The zero value is ready.
type Rate struct {
	mu      sync.Mutex
	buckets [rateWindow + 1]struct {
		sec int64
		n   float64
	}
}

// Add counts one event at now.
func (r *Rate) Add(now time.Time) {
	sec := now.Unix()
	r.mu.Lock()
	b := &r.buckets[sec%int64(len(r.buckets))]
	if b.sec != sec {
		b.sec, b.n = sec, 0
	}
	b.n++
	r.mu.Unlock()
}

// PerSecond is the mean rate over the 10 whole seconds before now's.
func (r *Rate) PerSecond(now time.Time) float64 {
	sec := now.Unix()
	r.mu.Lock()
	defer r.mu.Unlock()
	total := 0.0
	for _, b := range r.buckets {
		if b.sec < sec && b.sec >= sec-rateWindow {
			total += b.n
		}
	}
	return total / rateWindow
}
