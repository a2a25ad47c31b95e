package llama

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A decode step is some fifty parallel products of a few hundred
// microseconds each. Waking a parked goroutine for each costs tens of
// microseconds, a large share of that; so, as llama.cpp's thread pool does,
// helper goroutines stay on their cores, spinning, for a short while after
// each job before they park.

// spinFor is how long an idle helper spins before it parks.
const spinFor = 200 * time.Microsecond

type job struct {
	n, chunk int
	fn       func(lo, hi int)
	next     atomic.Int64 // next chunk start
	done     atomic.Int64 // indices finished
}

// run takes chunks until none is left.
func (j *job) run() {
	for {
		lo := int(j.next.Add(int64(j.chunk))) - j.chunk
		if lo >= j.n {
			return
		}
		hi := min(lo+j.chunk, j.n)
		j.fn(lo, hi)
		j.done.Add(int64(hi - lo))
	}
}

type team struct {
	busy    sync.Mutex // one job at a time; another caller spawns goroutines
	helpers int
	gen     atomic.Uint64
	job     atomic.Pointer[job]
	// Parking: a helper counts itself in sleepers before it looks at gen
	// a last time, so a publisher that sees no sleeper knows every helper
	// will see its job.
	mu       sync.Mutex
	cond     *sync.Cond
	sleepers atomic.Int32
}

var (
	theTeam  *team
	teamOnce sync.Once
)

func getTeam() *team {
	teamOnce.Do(func() {
		t := &team{helpers: runtime.GOMAXPROCS(0) - 1}
		t.cond = sync.NewCond(&t.mu)
		for range t.helpers {
			go t.help()
		}
		theTeam = t
	})
	return theTeam
}

func (t *team) help() {
	var seen uint64
	for {
		start := time.Now()
		for i := 0; t.gen.Load() == seen; i++ {
			if i%256 == 255 && time.Since(start) > spinFor {
				t.mu.Lock()
				t.sleepers.Add(1)
				for t.gen.Load() == seen {
					t.cond.Wait()
				}
				t.sleepers.Add(-1)
				t.mu.Unlock()
			}
		}
		seen = t.gen.Load()
		if j := t.job.Load(); j != nil {
			j.run()
		}
	}
}

// parallelFor runs fn over [0, n) in chunks on up to GOMAXPROCS cores, the
// caller's included; each chunk goes to the next core that is free, and fn
// has returned for every chunk when parallelFor returns.
func parallelFor(n, chunk int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	chunk = max(chunk, 1)
	if runtime.GOMAXPROCS(0) == 1 || n <= chunk {
		fn(0, n)
		return
	}
	t := getTeam()
	if t.helpers < 1 || !t.busy.TryLock() {
		spawnFor(n, chunk, fn)
		return
	}
	defer t.busy.Unlock()
	j := &job{n: n, chunk: chunk, fn: fn}
	t.job.Store(j)
	t.gen.Add(1)
	if t.sleepers.Load() > 0 {
		t.mu.Lock()
		t.cond.Broadcast()
		t.mu.Unlock()
	}
	j.run()
	for j.done.Load() < int64(n) {
		runtime.Gosched()
	}
}

// spawnFor is parallelFor on fresh goroutines, for a caller that finds the
// team busy with another model's job.
func spawnFor(n, chunk int, fn func(lo, hi int)) {
	j := &job{n: n, chunk: chunk, fn: fn}
	workers := min(runtime.GOMAXPROCS(0), (n+chunk-1)/chunk)
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j.run()
		}()
	}
	j.run()
	wg.Wait()
}
