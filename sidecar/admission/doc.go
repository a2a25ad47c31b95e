// Package admission is the sidecar's front door on the request path: a
// bounded queue with priority levels (0 is highest), round-robin fairness
// among tenants within a level, and deadline-aware admission.
//
// The queue never blocks. TryEnqueue either accepts an item or says why not
// (ErrQueueFull, ErrDeadline, ErrClosed); a waiting caller whose context ends
// takes its item back with Remove at once, whatever the engine is doing, and
// the scheduler takes work with TryDequeue between engine steps.
package admission
