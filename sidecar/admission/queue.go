package admission

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"
)

// Sentinel errors, for errors.Is.
var (
	// ErrQueueFull: the queue is at capacity and holds nothing of lower
	// priority to shed, or the item was shed for a higher-priority one.
	ErrQueueFull = errors.New("admission: queue full")
	// ErrDeadline: the expected queue wait exceeds the item's deadline, or
	// the deadline passed while it waited.
	ErrDeadline = errors.New("admission: deadline cannot be met")
	// ErrClosed: the queue no longer admits work (the sidecar is draining).
	ErrClosed = errors.New("admission: closed")
)

// Item is one request waiting for the scheduler. Fields other than the
// unexported ones are set by the caller before TryEnqueue.
type Item[T any] struct {
	Priority int
	Tenant   string
	// Ctx carries the request's cancellation and deadline.
	Ctx   context.Context
	Value T

	enqueued time.Time
	ahead    int
	tq       *tenantQueue[T]
	elem     *list.Element
}

// Enqueued is when TryEnqueue accepted the item.
func (it *Item[T]) Enqueued() time.Time { return it.enqueued }

type tenantQueue[T any] struct {
	name  string
	items list.List // of *Item[T]
	ring  *list.Element
}

type level[T any] struct {
	tenants map[string]*tenantQueue[T]
	ring    list.List // of *tenantQueue[T] with items, served round-robin
	n       int
}

// Config sizes a Queue.
type Config struct {
	// Levels is the number of priority levels; priorities beyond the last
	// level are clamped to it.
	Levels int
	// MaxQueue bounds the items waiting across all levels.
	MaxQueue int
}

// Queue is safe for concurrent use.
type Queue[T any] struct {
	cfg Config
	// shed is called, with the queue's lock held, for an item evicted to
	// make room for a higher-priority one. It must not block.
	shed func(*Item[T], error)

	mu     sync.Mutex
	levels []level[T]
	n      int
	closed bool
	// perPosition is a moving average of the queue wait per position ahead,
	// the basis of the wait estimate.
	perPosition time.Duration
	ready       chan struct{}
	now         func() time.Time
}

// New returns an empty queue. shed (may be nil) learns of evicted items.
func New[T any](cfg Config, shed func(*Item[T], error)) *Queue[T] {
	if cfg.Levels < 1 {
		cfg.Levels = 1
	}
	q := &Queue[T]{cfg: cfg, shed: shed, levels: make([]level[T], cfg.Levels), ready: make(chan struct{}, 1), now: time.Now}
	for i := range q.levels {
		q.levels[i].tenants = map[string]*tenantQueue[T]{}
	}
	return q
}

// Ready receives a value after items were enqueued; the scheduler waits on
// it when it has nothing to do.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }

// Level clamps a priority to a valid level.
func (q *Queue[T]) Level(p int) int {
	if p < 0 {
		return 0
	}
	if p >= len(q.levels) {
		return len(q.levels) - 1
	}
	return p
}

// TryEnqueue admits it or returns ErrQueueFull, ErrDeadline or ErrClosed.
func (q *Queue[T]) TryEnqueue(it *Item[T]) error {
	it.Priority = q.Level(it.Priority)
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	ahead := 0
	for p := 0; p <= it.Priority; p++ {
		ahead += q.levels[p].n
	}
	// With nothing ahead there is nothing to wait for but a free batch
	// slot, and a stale estimate must not lock a quiet queue shut.
	if dl, ok := it.Ctx.Deadline(); ok && ahead > 0 && q.perPosition > 0 {
		if now.Add(time.Duration(ahead+1) * q.perPosition).After(dl) {
			return ErrDeadline
		}
	}
	if q.n >= q.cfg.MaxQueue && !q.shedBelow(it.Priority) {
		return ErrQueueFull
	}
	it.enqueued, it.ahead = now, ahead
	lv := &q.levels[it.Priority]
	tq := lv.tenants[it.Tenant]
	if tq == nil {
		tq = &tenantQueue[T]{name: it.Tenant}
		lv.tenants[it.Tenant] = tq
	}
	if tq.items.Len() == 0 {
		tq.ring = lv.ring.PushBack(tq)
	}
	it.tq, it.elem = tq, tq.items.PushBack(it)
	lv.n++
	q.n++
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return nil
}

// shedBelow evicts the newest item of the largest tenant in the lowest
// level below priority p, if there is one.
func (q *Queue[T]) shedBelow(p int) bool {
	for l := len(q.levels) - 1; l > p; l-- {
		lv := &q.levels[l]
		if lv.n == 0 {
			continue
		}
		var big *tenantQueue[T]
		for e := lv.ring.Front(); e != nil; e = e.Next() {
			if tq := e.Value.(*tenantQueue[T]); big == nil || tq.items.Len() > big.items.Len() {
				big = tq
			}
		}
		victim := big.items.Back().Value.(*Item[T])
		q.unlink(victim)
		if q.shed != nil {
			q.shed(victim, ErrQueueFull)
		}
		return true
	}
	return false
}

func (q *Queue[T]) unlink(it *Item[T]) {
	lv := &q.levels[it.Priority]
	tq := it.tq
	tq.items.Remove(it.elem)
	if tq.items.Len() == 0 {
		lv.ring.Remove(tq.ring)
		delete(lv.tenants, tq.name)
	}
	it.tq, it.elem = nil, nil
	lv.n--
	q.n--
}

// Remove takes it out of the queue. It reports false when the item is no
// longer queued (dequeued by the scheduler, shed, or never enqueued).
func (q *Queue[T]) Remove(it *Item[T]) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if it.elem == nil {
		return false
	}
	q.unlink(it)
	return true
}

// TryDequeue returns the next item: highest priority first, tenants within
// a level in turn. Items whose context has ended are dropped on the way.
// It returns nil when nothing is queued.
func (q *Queue[T]) TryDequeue() *Item[T] {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for p := range q.levels {
		lv := &q.levels[p]
		for lv.n > 0 {
			front := lv.ring.Front()
			tq := front.Value.(*tenantQueue[T])
			it := tq.items.Front().Value.(*Item[T])
			q.unlink(it)
			if tq.items.Len() > 0 {
				lv.ring.MoveToBack(tq.ring)
			}
			if it.Ctx.Err() != nil {
				continue
			}
			q.observe(now.Sub(it.enqueued), it.ahead)
			return it
		}
	}
	return nil
}

// observe folds one queue wait into the per-position average (EWMA, 1/16).
func (q *Queue[T]) observe(wait time.Duration, ahead int) {
	per := wait / time.Duration(ahead+1)
	if q.perPosition == 0 {
		q.perPosition = per
		return
	}
	q.perPosition += (per - q.perPosition) / 16
}

// Len is the number of queued items.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// Depths returns the queued items per level.
func (q *Queue[T]) Depths() []int {
	q.mu.Lock()
	defer q.mu.Unlock()
	d := make([]int, len(q.levels))
	for i := range q.levels {
		d[i] = q.levels[i].n
	}
	return d
}

// Close stops admission; queued items stay for the scheduler to drain.
func (q *Queue[T]) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
}

// Reason names why err refused or dropped an item, as metrics label it:
// "queue_full", "deadline" or "draining"; "" for any other error.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrQueueFull):
		return "queue_full"
	case errors.Is(err, ErrDeadline):
		return "deadline"
	case errors.Is(err, ErrClosed):
		return "draining"
	}
	return ""
}

// Leave takes an item whose caller has gone out of the queue, if it is
// still there, and says what to end it with: ErrDeadline when its
// deadline passed while it waited, else ctxErr.
func (q *Queue[T]) Leave(it *Item[T], ctxErr error) (error, bool) {
	if !q.Remove(it) {
		return nil, false
	}
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		return ErrDeadline, true
	}
	return ctxErr, true
}
