package admission

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func item(p int, tenant string) *Item[string] {
	return &Item[string]{Priority: p, Tenant: tenant, Ctx: context.Background(), Value: fmt.Sprintf("%d/%s", p, tenant)}
}

func drain(q *Queue[string]) []string {
	var got []string
	for it := q.TryDequeue(); it != nil; it = q.TryDequeue() {
		got = append(got, it.Value)
	}
	return got
}

func TestPriorityOrder(t *testing.T) {
	q := New[string](Config{Levels: 3, MaxQueue: 10}, nil)
	for _, p := range []int{2, 0, 1, 7, -1} {
		if err := q.TryEnqueue(item(p, "a")); err != nil {
			t.Fatal(err)
		}
	}
	got := fmt.Sprint(drain(q))
	if want := "[0/a -1/a 1/a 2/a 7/a]"; got != want {
		t.Fatalf("order %s, want %s (priorities clamped to 0..2, FIFO within a level)", got, want)
	}
}

func TestTenantRoundRobin(t *testing.T) {
	q := New[string](Config{Levels: 1, MaxQueue: 10}, nil)
	for _, tn := range []string{"a", "a", "a", "a", "b", "c", "b"} {
		if err := q.TryEnqueue(item(0, tn)); err != nil {
			t.Fatal(err)
		}
	}
	got := fmt.Sprint(drain(q))
	if want := "[0/a 0/b 0/c 0/a 0/b 0/a 0/a]"; got != want {
		t.Fatalf("order %s, want %s", got, want)
	}
}

func TestFullQueueShedsLowerPriority(t *testing.T) {
	var shed []string
	q := New[string](Config{Levels: 3, MaxQueue: 3}, func(it *Item[string], err error) {
		if !errors.Is(err, ErrQueueFull) {
			t.Errorf("shed with %v", err)
		}
		shed = append(shed, it.Value)
	})
	for _, it := range []*Item[string]{item(1, "x"), item(2, "big"), item(2, "big")} {
		if err := q.TryEnqueue(it); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.TryEnqueue(item(2, "y")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("same-priority arrival on a full queue: %v, want ErrQueueFull", err)
	}
	if err := q.TryEnqueue(item(0, "z")); err != nil {
		t.Fatalf("higher-priority arrival: %v", err)
	}
	if fmt.Sprint(shed) != "[2/big]" {
		t.Fatalf("shed %v, want one item of the lowest level", shed)
	}
	if got := fmt.Sprint(drain(q)); got != "[0/z 1/x 2/big]" {
		t.Fatalf("left %s", got)
	}
}

func TestRemoveAndCancelled(t *testing.T) {
	q := New[string](Config{Levels: 1, MaxQueue: 4}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	a, b, c := item(0, "a"), item(0, "b"), item(0, "c")
	b.Ctx = ctx
	for _, it := range []*Item[string]{a, b, c} {
		if err := q.TryEnqueue(it); err != nil {
			t.Fatal(err)
		}
	}
	if !q.Remove(a) || q.Remove(a) {
		t.Fatal("Remove must succeed once")
	}
	cancel()
	if got := fmt.Sprint(drain(q)); got != "[0/c]" {
		t.Fatalf("got %s: removed and cancelled items must not be dequeued", got)
	}
	if q.Len() != 0 || q.Remove(c) {
		t.Fatal("queue should be empty and c no longer queued")
	}
}

func TestDeadlineEstimate(t *testing.T) {
	q := New[string](Config{Levels: 1, MaxQueue: 100}, nil)
	now := time.Unix(1000, 0)
	q.now = func() time.Time { return now }
	for i := 0; i < 4; i++ {
		if err := q.TryEnqueue(item(0, "a")); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(time.Second)
	q.TryDequeue() // waited 1s with nothing ahead: 1s per position
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(2500*time.Millisecond))
	defer cancel()
	late := item(0, "b")
	late.Ctx = ctx
	if err := q.TryEnqueue(late); !errors.Is(err, ErrDeadline) {
		t.Fatalf("3 ahead at 1s each vs 2.5s deadline: %v, want ErrDeadline", err)
	}
	drain(q)
	if err := q.TryEnqueue(late); err != nil {
		t.Fatalf("empty queue must admit whatever the estimate: %v", err)
	}
}

func TestClosed(t *testing.T) {
	q := New[string](Config{Levels: 1, MaxQueue: 4}, nil)
	q.Close()
	if err := q.TryEnqueue(item(0, "a")); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

func TestConcurrent(t *testing.T) {
	q := New[string](Config{Levels: 4, MaxQueue: 64}, func(*Item[string], error) {})
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, got := 0, 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				it := item(i%4, fmt.Sprint(g))
				if q.TryEnqueue(it) == nil {
					mu.Lock()
					accepted++
					mu.Unlock()
					if i%3 == 0 && q.Remove(it) {
						mu.Lock()
						accepted--
						mu.Unlock()
					}
				}
				if q.TryDequeue() != nil {
					mu.Lock()
					got++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	got += len(drain(q))
	if got > accepted || q.Len() != 0 {
		t.Fatalf("dequeued %d of %d accepted, %d left", got, accepted, q.Len())
	}
}
